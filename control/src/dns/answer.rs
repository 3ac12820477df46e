//! Answering one DNS query from a [`RecordSet`] (pure: bytes in, bytes out).
//!
//! Authoritative for its zones (`mesos.` and `l4lb.thisdcos.directory.` by
//! default): A, AAAA and SRV from the records (SRV answers carry the targets'
//! addresses as additionals), SOA at a zone apex; a name under a zone with no
//! record of any type is NXDOMAIN (with the SOA), a name with records of
//! other types is NOERROR without answers. Names outside the zones are
//! REFUSED, unless the server forwards them ([`is_foreign`] tells which). Malformed queries get FORMERR when an id can be
//! read, otherwise no answer.
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::records::RecordSet;

/// One zone this server is authoritative for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, fully qualified (`mesos.`).
    pub origin: String,
    pub ttl: u32,
}

/// Everything the server answers from.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    pub zones: Vec<Zone>,
    pub records: RecordSet,
}

impl Authority {
    fn zone_of(&self, name: &str) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| name == z.origin || name.ends_with(&format!(".{}", z.origin)))
            .max_by_key(|z| z.origin.len())
    }

    fn has_name(&self, name: &str) -> bool {
        [&self.records.a, &self.records.aaaa, &self.records.srv]
            .iter()
            .any(|m| m.contains_key(name))
    }
}

fn soa(zone: &Zone) -> Option<Record> {
    let origin = Name::from_ascii(&zone.origin).ok()?;
    let mname = Name::from_ascii(format!("ns1.{}", zone.origin)).ok()?;
    let rname = Name::from_ascii(format!("root.ns1.{}", zone.origin)).ok()?;
    let rdata = SOA::new(mname, rname, 1, 60, 600, 86400, zone.ttl);
    Some(Record::from_rdata(origin, zone.ttl, RData::SOA(rdata)))
}

fn address_records(
    auth: &Authority,
    name: &str,
    owner: &Name,
    ttl: u32,
    kind: RecordType,
) -> Vec<Record> {
    let map = match kind {
        RecordType::A => &auth.records.a,
        _ => &auth.records.aaaa,
    };
    map.get(name)
        .into_iter()
        .flatten()
        .filter_map(|v| match IpAddr::from_str(v).ok()? {
            IpAddr::V4(ip) => Some(RData::A(A(ip))),
            IpAddr::V6(ip) => Some(RData::AAAA(AAAA(ip))),
        })
        .map(|rdata| Record::from_rdata(owner.clone(), ttl, rdata))
        .collect()
}

/// Whether `request` is a well-formed query for a name outside every zone
/// (what a forwarder may send upstream instead of refusing).
pub fn is_foreign(request: &[u8], auth: &Authority) -> bool {
    let Ok(req) = Message::from_vec(request) else {
        return false;
    };
    let Some(q) = req.queries().first() else {
        return false;
    };
    let name = q.name().to_lowercase().to_ascii();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    req.op_code() == OpCode::Query && auth.zone_of(&name).is_none()
}

/// The response to `request`, or `None` when it cannot even be parsed.
pub fn answer(request: &[u8], auth: &Authority) -> Option<Vec<u8>> {
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => {
            if request.len() < 2 {
                return None;
            }
            let id = u16::from_be_bytes([request[0], request[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(false);
    let Some(query) = req.queries().first().cloned() else {
        resp.set_response_code(ResponseCode::FormErr);
        return resp.to_vec().ok();
    };
    resp.add_query(query.clone());
    if req.message_type() != MessageType::Query || req.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return resp.to_vec().ok();
    }
    let owner = query.name().clone();
    let name = owner.to_lowercase().to_ascii();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    let Some(zone) = auth.zone_of(&name).cloned() else {
        resp.set_response_code(ResponseCode::Refused);
        return resp.to_vec().ok();
    };
    resp.set_authoritative(true);
    let ttl = zone.ttl;
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    match query.query_type() {
        RecordType::A => answers = address_records(auth, &name, &owner, ttl, RecordType::A),
        RecordType::AAAA => answers = address_records(auth, &name, &owner, ttl, RecordType::AAAA),
        RecordType::SRV => {
            for value in auth.records.srv.get(&name).into_iter().flatten() {
                let Some((target, port)) = value.rsplit_once(':') else {
                    continue;
                };
                let (Ok(target_name), Ok(port)) = (Name::from_ascii(target), port.parse::<u16>())
                else {
                    continue;
                };
                let srv = SRV::new(0, 1, port, target_name.clone());
                answers.push(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
                for kind in [RecordType::A, RecordType::AAAA] {
                    additionals.extend(address_records(auth, target, &target_name, ttl, kind));
                }
            }
        }
        RecordType::SOA if name == zone.origin => answers.extend(soa(&zone)),
        _ => {}
    }
    if answers.is_empty() && !auth.has_name(&name) && name != zone.origin {
        resp.set_response_code(ResponseCode::NXDomain);
    }
    if answers.is_empty() {
        resp.insert_name_servers(soa(&zone).into_iter().collect());
    }
    resp.insert_answers(answers);
    resp.insert_additionals(additionals);
    resp.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn authority() -> Authority {
        let mut records = RecordSet::default();
        records.add_ip("web.marathon.mesos.", "10.0.0.1".parse().unwrap());
        records.add_ip("web.marathon.mesos.", "fd00::1".parse().unwrap());
        records.add_ip(
            "web-abcde-1.marathon.slave.mesos.",
            "10.0.0.1".parse().unwrap(),
        );
        records.add_srv(
            "_web._tcp.marathon.mesos.",
            "web-abcde-1.marathon.slave.mesos.",
            31000,
        );
        records.add_ip(
            "web.marathon.l4lb.thisdcos.directory.",
            "11.2.3.4".parse().unwrap(),
        );
        Authority {
            zones: vec![
                Zone {
                    origin: "mesos.".into(),
                    ttl: 60,
                },
                Zone {
                    origin: "l4lb.thisdcos.directory.".into(),
                    ttl: 5,
                },
            ],
            records,
        }
    }

    fn ask(name: &str, kind: RecordType) -> Message {
        let mut q = Message::new();
        q.set_id(4242).set_recursion_desired(true);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        Message::from_vec(&answer(&q.to_vec().unwrap(), &authority()).unwrap()).unwrap()
    }

    #[test]
    fn a_aaaa_and_srv_with_additionals() {
        let r = ask("Web.Marathon.Mesos.", RecordType::A);
        assert_eq!(r.id(), 4242);
        assert!(r.authoritative());
        assert_eq!(r.answers().len(), 1);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(r.answers()[0].ttl(), 60);
        let r = ask("web.marathon.mesos.", RecordType::AAAA);
        assert_eq!(
            r.answers()[0].data(),
            &RData::AAAA(AAAA("fd00::1".parse().unwrap()))
        );
        let r = ask("_web._tcp.marathon.mesos.", RecordType::SRV);
        let RData::SRV(srv) = r.answers()[0].data() else {
            panic!()
        };
        assert_eq!(srv.port(), 31000);
        assert_eq!(r.additionals().len(), 1);
        let r = ask("web.marathon.l4lb.thisdcos.directory.", RecordType::A);
        assert_eq!(r.answers()[0].ttl(), 5);
    }

    #[test]
    fn nxdomain_nodata_and_refused() {
        let r = ask("nope.marathon.mesos.", RecordType::A);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert_eq!(r.name_servers().len(), 1, "SOA in authority");
        let r = ask("_web._tcp.marathon.mesos.", RecordType::A);
        assert_eq!(
            (r.response_code(), r.answers().len()),
            (ResponseCode::NoError, 0)
        );
        let r = ask("example.com.", RecordType::A);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        let r = ask("mesos.", RecordType::SOA);
        assert_eq!(r.answers().len(), 1);
    }

    #[test]
    fn foreign_names_are_told_apart() {
        let q = |name: &str| {
            let mut m = Message::new();
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            m.to_vec().unwrap()
        };
        assert!(is_foreign(&q("example.com."), &authority()));
        assert!(!is_foreign(&q("web.marathon.mesos."), &authority()));
        assert!(!is_foreign(
            &q("nope.l4lb.thisdcos.directory."),
            &authority()
        ));
        assert!(!is_foreign(&[1, 2, 3], &authority()));
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        assert!(answer(&[1], &authority()).is_none());
        let bytes = answer(&[0x12, 0x34, 0xff, 0xff, 0xff], &authority()).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    }
}
