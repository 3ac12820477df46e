//! Authentication of the API: the route table walked (not hand-picked)
//! without a token and with every kind of bad token, then with a good one;
//! users logging in with passwords (the token in `Authorization: token=`,
//! `Bearer` and the cookie), account management; service accounts logging
//! in with a JWT signed by their own RSA key.
use std::collections::BTreeSet;

use garrison_control::auth::keys::{SigningKey, TokenKind, unix_now};
use garrison_control::auth::{BOOTSTRAP_UID, COOKIE, SESSION_SECS};
use garrison_control::client::{ApiClient, Reply};
use garrison_control::server::routes::{Access, RouteInfo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::{Server, TempDir, b64url_encode, header, jwt_claims, start, tampered};

/// What path parameters are replaced with.
const DUMMY: &str = "garrison-dummy";

/// `path` with every parameter (`{x}`, `{*x}`) replaced by [`DUMMY`].
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                DUMMY
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The method a route is called with (`None`, every method: GET).
fn method_of(route: &RouteInfo) -> String {
    route
        .method
        .as_ref()
        .map_or("GET".to_string(), |m| m.as_str().to_string())
}

fn describe(route: &RouteInfo) -> String {
    format!("{} {}", method_of(route), route.path)
}

/// `{"alg":…}.{claims}.` signed with nothing or HMAC: tokens a verifier
/// confused about algorithms would accept.
fn forged_tokens(server: &Server) -> Vec<(&'static str, String)> {
    let claims = json!({"uid": BOOTSTRAP_UID, "exp": unix_now() + 3600, "kind": "session"});
    let none = format!(
        "{}.{}.",
        b64url_encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64url_encode(claims.to_string().as_bytes())
    );
    // HS256 keyed with the control's public key (the classic RS/HS confusion).
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(server.auth.key().public_pem.as_bytes()),
    )
    .unwrap();
    vec![
        ("alg none", none),
        ("HS256 keyed with the public key", hs256),
    ]
}

/// Every kind of credential that must not open a session route: a label
/// and the headers that carry it.
fn bad_credentials(
    server: &Server,
    session: &str,
    other: &TempDir,
) -> Vec<(String, Vec<(String, String)>)> {
    let now = unix_now();
    let key = server.auth.key();
    let foreign_key = SigningKey::load_or_create(other.path()).unwrap();
    let expired = key.issue(BOOTSTRAP_UID, TokenKind::Session, now - 10);
    let mut tokens: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("expired", expired.clone()),
        ("tampered", tampered(session)),
        ("join token", server.auth.join_token(60)),
        (
            "join-kind token of an existing account",
            key.issue(BOOTSTRAP_UID, TokenKind::Join, now + 3600),
        ),
        (
            "unknown account",
            key.issue("nobody-here", TokenKind::Session, now + 3600),
        ),
        (
            "another control's key",
            foreign_key.issue(BOOTSTRAP_UID, TokenKind::Session, now + 3600),
        ),
    ];
    tokens.extend(forged_tokens(server));
    let auth = |v: String| vec![("Authorization".to_string(), v)];
    let mut cases: Vec<(String, Vec<(String, String)>)> = vec![("no token".into(), vec![])];
    for (label, t) in &tokens {
        cases.push((format!("{label} (token=)"), auth(format!("token={t}"))));
    }
    cases.push(("expired (Bearer)".into(), auth(format!("Bearer {expired}"))));
    cases.push((
        "tampered (cookie)".into(),
        vec![("Cookie".into(), format!("{COOKIE}={}", tampered(session)))],
    ));
    cases.push((
        "Basic credentials".into(),
        auth(format!("Basic {}", b64url_encode(b"bootstrap:password"))),
    ));
    cases.push((
        "the token in the wrong cookie".into(),
        vec![("Cookie".into(), format!("other={session}"))],
    ));
    cases
}

fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn every_session_route_refuses_missing_and_bad_tokens_and_takes_a_good_one() {
    let dir = TempDir::new("routes");
    let other = TempDir::new("routes-other-key");
    let server = start(dir.path());
    let session = server.client().token.unwrap();
    let routes = server.control.routes();
    let list = routes.list();
    let session_routes: Vec<&RouteInfo> = list
        .iter()
        .filter(|r| r.access == Access::Session)
        .collect();
    assert!(session_routes.len() > 20, "{list:?}");

    let mut failures = Vec::new();
    for (label, headers) in bad_credentials(&server, &session, &other) {
        for route in &session_routes {
            let (status, answer) = server.head(
                &method_of(route),
                &concrete(&route.path),
                &as_refs(&headers),
            );
            if status != 401 || header(&answer, "www-authenticate") != Some("oauthjwt") {
                failures.push(format!(
                    "{} with {label}: {status}, www-authenticate {:?}",
                    describe(route),
                    header(&answer, "www-authenticate")
                ));
            }
        }
    }
    for route in &session_routes {
        let auth = format!("token={session}");
        let (status, _) = server.head(
            &method_of(route),
            &concrete(&route.path),
            &[("Authorization", &auth)],
        );
        if status == 401 {
            failures.push(format!("{} with a valid token: 401", describe(route)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn only_ping_login_and_the_agents_stream_are_public() {
    let dir = TempDir::new("public");
    let server = start(dir.path());
    let routes = server.control.routes();
    let list = routes.list();
    let public: BTreeSet<String> = list
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(describe)
        .collect();
    let expected: BTreeSet<String> = [
        "GET /ping",
        "POST /acs/api/v1/auth/login",
        "GET /v1/agents/stream",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(public, expected);
    for route in list.iter().filter(|r| r.access == Access::Public) {
        let (status, answer) = server.head(&method_of(route), &concrete(&route.path), &[]);
        if route.path == "/v1/agents/stream" {
            // It checks its own credentials: a join token or an agent's.
            assert_eq!(status, 401, "the agents' stream without credentials");
            assert_eq!(header(&answer, "www-authenticate"), Some("oauthjwt"));
        } else {
            assert_ne!(status, 401, "{} without a token", describe(route));
        }
    }
    let (status, _) = server.head("GET", "/ping", &[]);
    assert_eq!(status, 200);
    // A session token is not an agent's credential.
    let session = format!("token={}", server.client().token.unwrap());
    let (status, _) = server.head("GET", "/v1/agents/stream", &[("Authorization", &session)]);
    assert_eq!(status, 401, "a session token opens no agent stream");
}

#[test]
fn the_route_table_has_admin_routers_prefixes_for_every_marathon_and_mesos_dns_route() {
    let dir = TempDir::new("prefixes");
    let server = start(dir.path());
    let routes = server.control.routes();
    let list = routes.list();
    let all: BTreeSet<(String, String)> = list
        .iter()
        .map(|r| (method_of(r), r.path.clone()))
        .collect();
    assert_eq!(
        all.len(),
        list.len(),
        "a (method, path) listed twice: {list:?}"
    );
    let has = |m: &str, p: &str| all.contains(&(m.to_string(), p.to_string()));
    let marathon = [
        ("GET", "/v2/apps"),
        ("POST", "/v2/apps"),
        ("GET", "/v2/apps/{*id}"),
        ("PUT", "/v2/apps/{*id}"),
        ("DELETE", "/v2/apps/{*id}"),
        ("GET", "/v2/tasks"),
        ("GET", "/v2/deployments"),
        ("GET", "/v2/queue"),
        ("GET", "/v2/info"),
        ("GET", "/v2/events"),
    ];
    for (m, p) in marathon {
        assert!(has(m, p), "{m} {p} is missing: {list:?}");
    }
    for r in list.iter().filter(|r| r.path.starts_with("/v2/")) {
        let prefixed = list
            .iter()
            .find(|o| o.path == format!("/marathon{}", r.path) && o.method == r.method);
        assert_eq!(
            prefixed.map(|o| o.access),
            Some(r.access),
            "{} has no /marathon twin with the same access",
            describe(r)
        );
    }
    assert!(has("GET", "/marathon/v2/apps"));
    assert!(has("GET", "/mesos_dns/v1/version"));
    for r in list.iter().filter(|r| r.path.starts_with("/mesos_dns/")) {
        let bare = &r.path["/mesos_dns".len()..];
        assert!(
            list.iter().any(|o| o.path == bare && o.method == r.method),
            "{} is not the unprefixed route {bare} too",
            describe(r)
        );
    }
    // And the prefixed routes answer as the bare ones do.
    let api = server.client();
    let (status, body) = api.request("GET", "/marathon/v2/apps", None).unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"apps":[]}"#));
    let (status, body) = api.request("GET", "/mesos_dns/v1/version", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Mesos-DNS"), "{body}");
}

fn login_reply(api: &ApiClient, body: &Value) -> Reply {
    api.anonymous()
        .request_full(
            "POST",
            "/acs/api/v1/auth/login",
            Some(&body.to_string()),
            &[],
        )
        .unwrap()
}

fn json_of(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

/// Asserts a 401 with DC/OS's challenge and `code`.
fn assert_unauthorized(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.header("www-authenticate"), Some("oauthjwt"));
    assert_eq!(json_of(reply)["code"], code, "{}", reply.body);
}

fn get_apps_with(api: &ApiClient, headers: &[(&str, &str)]) -> u16 {
    api.anonymous()
        .request_full("GET", "/v2/apps", None, headers)
        .unwrap()
        .status
}

#[test]
fn a_user_logs_in_and_the_token_works_as_header_bearer_and_cookie() {
    let dir = TempDir::new("login");
    let server = start(dir.path());
    let api = server.anonymous();
    let reply = login_reply(
        &api,
        &json!({"uid": BOOTSTRAP_UID, "password": server.bootstrap_password()}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = json_of(&reply)["token"].as_str().unwrap().to_string();
    let claims = jwt_claims(&token);
    assert_eq!(claims["uid"], BOOTSTRAP_UID);
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > unix_now() + SESSION_SECS - 3600 && exp <= unix_now() + SESSION_SECS);

    let cookie = reply
        .header("set-cookie")
        .expect("the login sets the cookie");
    let mut parts = cookie.split(';').map(str::trim);
    assert_eq!(parts.next(), Some(format!("{COOKIE}={token}").as_str()));
    let attributes: Vec<&str> = parts.collect();
    for wanted in ["HttpOnly", "Secure", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted} missing in {cookie}");
    }
    assert!(
        attributes.iter().any(|a| a.starts_with("SameSite=")),
        "SameSite missing in {cookie}"
    );

    assert_eq!(get_apps_with(&api, &[]), 401);
    assert_eq!(
        get_apps_with(&api, &[("Authorization", &format!("token={token}"))]),
        200
    );
    assert_eq!(
        get_apps_with(&api, &[("Authorization", &format!("Bearer {token}"))]),
        200
    );
    let cookie_header = format!("theme=dark; {COOKIE}={token}; lang=en");
    assert_eq!(get_apps_with(&api, &[("Cookie", &cookie_header)]), 200);

    // Wrong password and unknown account: the same refusal.
    let wrong = login_reply(
        &api,
        &json!({"uid": BOOTSTRAP_UID, "password": "wrong password"}),
    );
    assert_unauthorized(&wrong, "ERR_INVALID_CREDENTIALS");
    assert!(wrong.header("set-cookie").is_none());
    let unknown = login_reply(
        &api,
        &json!({"uid": "nobody-here", "password": "whatever1"}),
    );
    assert_unauthorized(&unknown, "ERR_INVALID_CREDENTIALS");
    // A body that is neither form.
    let odd = login_reply(&api, &json!({"uid": BOOTSTRAP_UID, "secret": "x"}));
    assert_eq!(odd.status, 400, "{}", odd.body);
}

#[test]
fn accounts_are_managed_over_the_api_and_a_deleted_users_token_dies_at_once() {
    let dir = TempDir::new("accounts");
    let server = start(dir.path());
    let admin = server.client();
    let users = |api: &ApiClient| -> BTreeSet<String> {
        let (status, body) = api.request("GET", "/acs/api/v1/users", None).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["array"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["uid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(users(&admin), BTreeSet::from([BOOTSTRAP_UID.to_string()]));

    let alice = json!({"description": "Alice", "password": "correct horse"}).to_string();
    let (status, body) = admin
        .request("PUT", "/acs/api/v1/users/alice", Some(&alice))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (view["uid"].as_str(), view["is_service"].as_bool()),
        (Some("alice"), Some(false))
    );
    assert!(
        !body.contains("correct horse") && !body.contains("argon2"),
        "{body}"
    );

    let as_alice = server.anonymous();
    let token = as_alice.login("alice", "correct horse").unwrap();
    let as_alice = as_alice.with_token(token.clone());
    // Her token works (and is now in the verified-token cache).
    assert_eq!(as_alice.request("GET", "/v2/apps", None).unwrap().0, 200);
    assert_eq!(
        users(&as_alice),
        BTreeSet::from([BOOTSTRAP_UID.to_string(), "alice".to_string()])
    );
    let (status, body) = admin
        .request("GET", "/acs/api/v1/users/alice", None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("argon2"), "{body}");

    let (status, body) = admin
        .request("DELETE", "/acs/api/v1/users/alice", None)
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let refused = as_alice
        .anonymous()
        .request_full(
            "GET",
            "/v2/apps",
            None,
            &[("Authorization", &format!("token={token}"))],
        )
        .unwrap();
    assert_unauthorized(&refused, "ERR_INVALID_TOKEN");
    assert!(server.anonymous().login("alice", "correct horse").is_err());
    assert_eq!(users(&admin), BTreeSet::from([BOOTSTRAP_UID.to_string()]));
    assert_eq!(
        admin
            .request("GET", "/acs/api/v1/users/alice", None)
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        admin
            .request("DELETE", "/acs/api/v1/users/alice", None)
            .unwrap()
            .0,
        404
    );

    // An existing uid, a bad uid, a short password, two secrets at once.
    let (status, body) = admin
        .request(
            "PUT",
            &format!("/acs/api/v1/users/{BOOTSTRAP_UID}"),
            Some(&alice),
        )
        .unwrap();
    assert_eq!(status, 409, "{body}");
    let refused = |path: &str, body: &str| -> String {
        let (status, text) = admin.request("PUT", path, Some(body)).unwrap();
        assert_eq!(status, 400, "PUT {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["description"].as_str().unwrap().to_string()
    };
    let bad_uid = refused("/acs/api/v1/users/a!b", &alice);
    assert!(
        bad_uid.contains("uid \"a!b\"") && bad_uid.contains("a-z"),
        "{bad_uid}"
    );
    let short = refused("/acs/api/v1/users/bob", r#"{"password":"short"}"#);
    assert!(
        short.contains("\"bob\"") && short.contains("at least 8 characters"),
        "{short}"
    );
    let both = refused(
        "/acs/api/v1/users/bob",
        r#"{"password":"long enough","public_key":"x"}"#,
    );
    assert!(both.contains("exactly one of"), "{both}");
    let unknown_field = refused("/acs/api/v1/users/bob", r#"{"pasword":"long enough"}"#);
    assert!(unknown_field.contains("pasword"), "{unknown_field}");
    assert_eq!(users(&admin), BTreeSet::from([BOOTSTRAP_UID.to_string()]));
}

/// An RSA key pair: (private PKCS#8 PEM, public SPKI PEM).
fn rsa_key_pair() -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let private = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (private, public)
}

/// A service account's login token: RS256 with its private key, `uid`, `exp`.
fn login_token(private_pem: &str, uid: &str, exp: u64) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"uid": uid, "exp": exp}),
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_service_account_logs_in_with_a_jwt_signed_by_its_own_key() {
    let dir = TempDir::new("service");
    let server = start(dir.path());
    let admin = server.client();
    let (private, public) = rsa_key_pair();
    let (other_private, _) = rsa_key_pair();
    let uid = "svc.marathon-lb";
    let account = json!({"description": "marathon-lb", "public_key": public}).to_string();
    let (status, body) = admin
        .request("PUT", &format!("/acs/api/v1/users/{uid}"), Some(&account))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["is_service"], true, "{body}");

    let now = unix_now();
    let wanted_exp = now + 3600;
    let reply = login_reply(
        &admin,
        &json!({"uid": uid, "token": login_token(&private, uid, now + 60), "exp": wanted_exp}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = json_of(&reply)["token"].as_str().unwrap().to_string();
    let claims = jwt_claims(&session);
    assert_eq!(claims["uid"], uid);
    assert_eq!(
        claims["exp"].as_u64(),
        Some(wanted_exp),
        "the requested expiry"
    );
    assert!(
        reply
            .header("set-cookie")
            .unwrap()
            .starts_with(&format!("{COOKIE}={session};"))
    );
    let api = server.anonymous().with_token(session);
    assert_eq!(api.request("GET", "/v2/apps", None).unwrap().0, 200);

    // Without "exp": the default lifetime.
    let reply = login_reply(
        &admin,
        &json!({"uid": uid, "token": login_token(&private, uid, now + 60)}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let exp = jwt_claims(json_of(&reply)["token"].as_str().unwrap())["exp"]
        .as_u64()
        .unwrap();
    assert!(exp > now + SESSION_SECS - 3600, "{exp}");

    let refusals = [
        (
            "signed by another key",
            json!({"uid": uid, "token": login_token(&other_private, uid, now + 60)}),
        ),
        (
            "expired",
            json!({"uid": uid, "token": login_token(&private, uid, now - 120)}),
        ),
        (
            "made for another uid",
            json!({"uid": uid, "token": login_token(&private, "someone-else", now + 60)}),
        ),
        (
            "tampered",
            json!({"uid": uid, "token": tampered(&login_token(&private, uid, now + 60))}),
        ),
        (
            "a password for a service account",
            json!({"uid": uid, "password": "any password"}),
        ),
        (
            "a login token for a user",
            json!({"uid": BOOTSTRAP_UID, "token": login_token(&private, BOOTSTRAP_UID, now + 60)}),
        ),
    ];
    for (label, body) in refusals {
        let reply = login_reply(&admin, &body);
        assert_eq!(reply.status, 401, "{label}: {}", reply.body);
        assert_unauthorized(&reply, "ERR_INVALID_CREDENTIALS");
        assert!(reply.header("set-cookie").is_none(), "{label}");
    }

    // A public key that is not one.
    let (status, body) = admin
        .request(
            "PUT",
            "/acs/api/v1/users/svc-bad",
            Some(r#"{"public_key":"not a key"}"#),
        )
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("svc-bad") && body.contains("public_key"),
        "{body}"
    );
}

#[test]
fn one_of_two_concurrent_creations_of_an_account_wins_in_memory_and_in_the_store() {
    let dir = TempDir::new("accounts-race");
    let server = start(dir.path());
    let admin = server.client();
    let uids = ["twin0", "twin1", "twin2", "twin3"];
    let mut winners = Vec::new();
    for uid in uids {
        let barrier = std::sync::Barrier::new(2);
        let path = format!("/acs/api/v1/users/{uid}");
        let answers: Vec<(u16, String)> = std::thread::scope(|s| {
            let put = |password: String| {
                let (admin, barrier, path) = (&admin, &barrier, &path);
                s.spawn(move || {
                    let body = json!({ "password": password }).to_string();
                    barrier.wait();
                    let (status, _) = admin.request("PUT", path, Some(&body)).unwrap();
                    (status, password)
                })
            };
            let a = put(format!("{uid} password A"));
            let b = put(format!("{uid} password B"));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        statuses.sort();
        assert_eq!(statuses, vec![201, 409], "{uid}: {answers:?}");
        let (_, password) = answers.into_iter().find(|(s, _)| *s == 201).unwrap();
        server.anonymous().login(uid, &password).unwrap();
        winners.push((uid, password));
    }
    drop(server);
    // The store holds what the API answered.
    let server = start(dir.path());
    for (uid, password) in winners {
        server
            .anonymous()
            .login(uid, &password)
            .unwrap_or_else(|e| panic!("{uid} after a restart: {e}"));
    }
}
