//! The route table: every HTTP route with its method and who may call it,
//! kept as data next to the router built from it, so the authentication
//! test walks the real list (`Control::routes`) instead of a hand-picked one.
use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};

use super::Control;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: `/ping`, the login, the agents' join handshake (which checks
    /// its own credentials).
    Public,
    /// A valid session token (header or cookie).
    Session,
}

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// `None`: every method (the reverse proxies).
    pub method: Option<Method>,
    /// axum's path syntax (`/v2/apps/{*id}`).
    pub path: String,
    pub access: Access,
}

/// A router and the list of what it routes.
pub struct Routes {
    router: Router<Arc<Control>>,
    list: Vec<RouteInfo>,
    control: Arc<Control>,
}

impl Routes {
    pub fn new(control: &Arc<Control>) -> Routes {
        Routes {
            router: Router::new(),
            list: Vec::new(),
            control: control.clone(),
        }
    }

    fn add(
        mut self,
        method: Option<Method>,
        path: &str,
        access: Access,
        mr: MethodRouter<Arc<Control>>,
    ) -> Routes {
        let mr = match access {
            Access::Public => mr,
            Access::Session => mr.route_layer(axum::middleware::from_fn_with_state(
                self.control.clone(),
                super::guard::require_session,
            )),
        };
        self.router = self.router.route(path, mr);
        self.list.push(RouteInfo {
            method,
            path: path.to_string(),
            access,
        });
        self
    }

    /// `method path` served by `handler`.
    pub fn route<H, T>(self, method: Method, path: &str, access: Access, handler: H) -> Routes
    where
        H: Handler<T, Arc<Control>>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.add(
            Some(method),
            path,
            access,
            axum::routing::on(filter, handler),
        )
    }

    /// Every method of `path` served by `handler`.
    pub fn any<H, T>(self, path: &str, access: Access, handler: H) -> Routes
    where
        H: Handler<T, Arc<Control>>,
        T: 'static,
    {
        self.add(None, path, access, axum::routing::any(handler))
    }

    /// Adds `other`'s routes as they are.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.list.extend(other.list);
        self
    }

    /// Adds `other`'s routes under `prefix` as well (Admin Router's
    /// `/marathon/…`, `/mesos_dns/…`).
    pub fn nest(mut self, prefix: &str, other: Routes) -> Routes {
        self.router = self.router.nest(prefix, other.router);
        self.list.extend(other.list.into_iter().map(|r| RouteInfo {
            path: format!("{prefix}{}", r.path),
            ..r
        }));
        self
    }

    /// The list of routes.
    pub fn list(&self) -> &[RouteInfo] {
        &self.list
    }

    /// The router, ready to serve.
    pub fn into_router(self) -> Router {
        self.router.with_state(self.control)
    }
}
