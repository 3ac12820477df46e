//! The typed messages are the same JSON text as the string-typed ones were:
//! every frame below was produced by `garrison-proto` before the wire was
//! typed (commit 0e71c12, states, addresses and protocols as `String`);
//! each must parse and serialise back to the very same text. And what the
//! types refuse: a state, protocol or address outside its type refuses the
//! frame (the receivers log and skip it).
use garrison_proto::{
    AgentMessage, ControlMessage, HealthCheckProtocol, Protocol, Reservation, TaskState,
};

const AGENT_FRAMES: &[&str] = &[
    r#"{"type":"register","agent_id":"agent-1","hostname":"node1","ip":"10.0.0.1","resources":{"cpus":8.0,"mem":16000.0,"disk":100000.5,"ports":"[31000-32000]","reserved":{"role":"slave_public","cpus":2.0,"mem":1024.0,"disk":0.0}},"tasks":[{"task_id":"web.1","state":"TASK_RUNNING","reason":null,"healthy":true},{"task_id":"web.2","state":"TASK_STAGING","reason":null,"healthy":null},{"task_id":"old.1","state":"TASK_FINISHED","reason":"exited 0","healthy":null}]}"#,
    r#"{"type":"register","agent_id":"agent-6","hostname":"node6","ip":"fd00::6","resources":{"cpus":0.0,"mem":0.0,"disk":0.0,"ports":"[31000-32000]","reserved":null},"tasks":[]}"#,
    r#"{"type":"heartbeat"}"#,
    r#"{"type":"task_status","task_id":"web.1","state":"TASK_KILLED","reason":"killed on request","healthy":false}"#,
    r#"{"type":"task_status","task_id":"web.3","state":"TASK_LOST","reason":"kill failed: x","healthy":null}"#,
    r#"{"type":"task_status","task_id":"web.4","state":"TASK_FAILED","reason":null,"healthy":null}"#,
    r#"{"type":"vip_ack","revision":42}"#,
    r#"{"type":"vip_counters","counters":{"11.0.0.1:80/tcp":7,"[fd00::1]:53/udp":3}}"#,
];

const CONTROL_FRAMES: &[&str] = &[
    r#"{"type":"registered","heartbeat_interval_ms":1000}"#,
    r#"{"type":"launch","task_id":"web.00000001-000002","app_id":"/web","cmd":"python3 -m http.server $PORT0","cpus":0.1,"mem":32.0,"disk":0.0,"ports":[31000,31001],"env":{"HOST":"node1","PORT0":"31000"},"health_checks":[{"protocol":"HTTP","path":"/","port_index":0,"command":null,"grace_period_seconds":300.0,"interval_seconds":60.0,"timeout_seconds":20.0,"max_consecutive_failures":3},{"protocol":"TCP","path":null,"port_index":0,"command":null,"grace_period_seconds":300.0,"interval_seconds":60.0,"timeout_seconds":20.0,"max_consecutive_failures":3},{"protocol":"COMMAND","path":null,"port_index":0,"command":"true","grace_period_seconds":300.0,"interval_seconds":60.0,"timeout_seconds":20.0,"max_consecutive_failures":3}]}"#,
    r#"{"type":"kill","task_id":"web.1"}"#,
    r#"{"type":"vip_table","revision":3,"vips":[{"ip":"11.4.5.6","port":80,"protocol":"tcp","name":"web.marathon.l4lb.thisdcos.directory","backends":[{"ip":"10.0.0.1","port":31000,"weight":1},{"ip":"10.0.0.2","port":31001,"weight":0}]},{"ip":"10.10.0.1","port":53,"protocol":"udp","name":null,"backends":[{"ip":"fd00::2","port":31053,"weight":1}]}]}"#,
];

#[test]
fn every_frame_of_the_string_typed_wire_round_trips_byte_for_byte() {
    for text in AGENT_FRAMES {
        let m: AgentMessage = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(serde_json::to_string(&m).unwrap(), *text);
    }
    for text in CONTROL_FRAMES {
        let m: ControlMessage =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(serde_json::to_string(&m).unwrap(), *text);
    }
}

#[test]
fn the_frames_parse_into_types() {
    let AgentMessage::Register(reg) = serde_json::from_str(AGENT_FRAMES[0]).unwrap() else {
        panic!("register expected");
    };
    assert_eq!(reg.ip, std::net::IpAddr::from([10, 0, 0, 1]));
    let states: Vec<TaskState> = reg.tasks.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [TaskState::Running, TaskState::Staging, TaskState::Finished]
    );
    assert_eq!(
        reg.resources.reserved.map(|r| r.role),
        Some("slave_public".to_string())
    );
    let ControlMessage::VipTable(table) = serde_json::from_str(CONTROL_FRAMES[3]).unwrap() else {
        panic!("vip_table expected");
    };
    assert_eq!(table.vips[1].protocol, Protocol::Udp);
    assert!(table.vips[1].backends[0].ip.is_ipv6());
    let ControlMessage::Launch(launch) = serde_json::from_str(CONTROL_FRAMES[1]).unwrap() else {
        panic!("launch expected");
    };
    let protocols: Vec<HealthCheckProtocol> =
        launch.health_checks.iter().map(|h| h.protocol).collect();
    assert_eq!(
        protocols,
        [
            HealthCheckProtocol::Http,
            HealthCheckProtocol::Tcp,
            HealthCheckProtocol::Command
        ]
    );
}

/// Replaces the first `from` in `text` (which must contain it).
fn with(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from} not in {text}");
    text.replacen(from, to, 1)
}

#[test]
fn a_name_outside_its_type_refuses_the_frame_and_says_which() {
    let status = with(AGENT_FRAMES[3], "TASK_KILLED", "TASK_BOGUS");
    let e = serde_json::from_str::<AgentMessage>(&status).unwrap_err();
    assert!(e.to_string().contains("TASK_BOGUS"), "{e}");
    // Mesos spells them in capitals; nothing else is a state.
    let lower = with(AGENT_FRAMES[3], "TASK_KILLED", "task_killed");
    assert!(serde_json::from_str::<AgentMessage>(&lower).is_err());
    let register = with(AGENT_FRAMES[0], "TASK_STAGING", "TASK_PAUSED");
    assert!(serde_json::from_str::<AgentMessage>(&register).is_err());
    let sctp = with(
        CONTROL_FRAMES[3],
        r#""protocol":"udp""#,
        r#""protocol":"sctp""#,
    );
    let e = serde_json::from_str::<ControlMessage>(&sctp).unwrap_err();
    assert!(e.to_string().contains("sctp"), "{e}");
    let http_lower = with(
        CONTROL_FRAMES[1],
        r#""protocol":"HTTP""#,
        r#""protocol":"http""#,
    );
    assert!(serde_json::from_str::<ControlMessage>(&http_lower).is_err());
    let host = with(
        CONTROL_FRAMES[3],
        r#""ip":"10.0.0.2""#,
        r#""ip":"backend.local""#,
    );
    assert!(serde_json::from_str::<ControlMessage>(&host).is_err());
    let agent_ip = with(AGENT_FRAMES[1], r#""ip":"fd00::6""#, r#""ip":"node6""#);
    assert!(serde_json::from_str::<AgentMessage>(&agent_ip).is_err());
    // Every other frame still parses: the refusal is the frame's alone.
    assert!(serde_json::from_str::<AgentMessage>(AGENT_FRAMES[4]).is_ok());
}

#[test]
fn the_reservation_is_the_agent_configurations_too() {
    // The agent's `[isolation.reserved]` may leave out what it does not reserve.
    let r: Reservation = serde_json::from_str(r#"{"role":"slave_public","mem":512}"#).unwrap();
    assert_eq!((r.cpus, r.mem, r.disk), (0.0, 512.0, 0.0));
    let typo = serde_json::from_str::<Reservation>(r#"{"role":"r","cpu":2}"#).unwrap_err();
    assert!(typo.to_string().contains("cpu"), "{typo}");
}
