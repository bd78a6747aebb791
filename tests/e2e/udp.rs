//! UDP upstreams (`protocol: udp`): `dig` through the sidecar to two
//! dnsmasq instances that answer the same name differently. Every `dig` is
//! a new source port, so a new flow: round robin spreads them over both;
//! one socket sending again stays on its endpoint; when one dnsmasq dies,
//! the flow that meets its ICMP port unreachable fails (one `dig` at most:
//! `consecutive_connect_failures: 1` ejects the endpoint at once) and every
//! later flow goes to the survivor.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use mesh_tests::{wait_until, Sidecar};

use crate::discovery::Dns;

/// One `dig` (one try, 2 s); the answer, or `None` when it timed out.
fn dig(port: u16) -> Option<String> {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["svc.test", "A", "+short", "+tries=1", "+time=2"])
        .output()
        .expect("dig is installed (scripts/test installs dnsutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_string)
}

/// A bare DNS query for `svc.test A` (no EDNS), with query id `id`.
fn query(id: u16) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    packet.extend(b"\x03svc\x04test\x00\x00\x01\x00\x01");
    packet
}

/// Sends queries from one socket (one flow); the A address of each answer.
fn same_flow_answers(proxy: SocketAddr, count: u16) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    (0..count)
        .map(|id| {
            socket.send_to(&query(id), proxy).unwrap();
            let mut buf = [0u8; 512];
            let len = socket.recv(&mut buf).expect("an answer on the same flow");
            let a = &buf[len - 4..len]; // the one answer's rdata ends the packet
            format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
        })
        .collect()
}

#[test]
fn udp_flows_balance_over_both_and_the_survivor_takes_over() {
    let first = Dns::start("10.0.0.1 svc.test\n", &[]);
    let second = Dns::start("10.0.0.2 svc.test\n", &[]);
    let sidecar = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain: {{ delay: 0s, deadline: 5s }}\noutbound:\n  upstreams:\n    dns:\n      listen: 127.0.0.1:0\n      protocol: udp\n      balance: round_robin\n      timeouts: {{ idle: 1s }}\n      outlier: {{ consecutive_connect_failures: 1 }}\n      discovery: {{ endpoints: [127.0.0.1:{}, 127.0.0.1:{}] }}\n",
        first.port, second.port
    ));
    let proxy = sidecar.listener("outbound", Some("dns"));

    let answers: Vec<Option<String>> = (0..6).map(|_| dig(proxy.port())).collect();
    for address in ["10.0.0.1", "10.0.0.2"] {
        assert!(
            answers.iter().any(|a| a.as_deref() == Some(address)),
            "{address} answers some flow: {answers:?}"
        );
    }
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
    let sticky = same_flow_answers(proxy, 4);
    assert!(
        sticky.iter().all(|a| *a == sticky[0]),
        "one flow sticks to one endpoint: {sticky:?}"
    );
    assert!(sidecar.metric("mesh_udp_flows_total{upstream=\"dns\"}") >= 7.0);
    wait_until(Duration::from_secs(5), "idle flows end", || {
        sidecar.metric("mesh_udp_flows_open{upstream=\"dns\"}") == 0.0
    });

    let mut first = first;
    first.proc.signal("KILL");
    first
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("dnsmasq killed");
    let after: Vec<Option<String>> = (0..6).map(|_| dig(proxy.port())).collect();
    let failed = after.iter().filter(|a| a.is_none()).count();
    assert!(
        failed <= 1,
        "at most the first flow to the dead endpoint fails: {after:?}"
    );
    assert!(
        after.iter().flatten().all(|a| a == "10.0.0.2"),
        "only the survivor answers: {after:?}"
    );
    let clusters = sidecar.admin_json("/clusters");
    let dead = format!("127.0.0.1:{}", first.port);
    let state = clusters
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dns")
        .unwrap()["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addr"] == dead.as_str())
        .unwrap()["state"]
        .clone();
    assert_eq!(state, "ejected", "{clusters}");
    drop(second);
}

/// The config of the reload test: the `dns` UDP upstream over `endpoints`, or none.
fn reload_config(endpoints: &[u16]) -> String {
    let mut yaml = "service: web\nadmin: { listen: 127.0.0.1:0 }\ndrain: { delay: 0s, deadline: 5s }\noutbound:\n  upstreams:\n".to_string();
    if !endpoints.is_empty() {
        let list: Vec<String> = endpoints.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        yaml.push_str(&format!(
            "    dns:\n      listen: 127.0.0.1:0\n      protocol: udp\n      balance: round_robin\n      timeouts: {{ idle: 1s }}\n      discovery: {{ endpoints: [{}] }}\n",
            list.join(", ")
        ));
    }
    yaml
}

#[test]
fn a_reload_reaches_new_flows_and_a_removed_udp_listener_stops() {
    let first = Dns::start("10.0.0.1 svc.test\n", &[]);
    let second = Dns::start("10.0.0.2 svc.test\n", &[]);
    let sidecar = Sidecar::start(&reload_config(&[first.port]));
    let proxy = sidecar.listener("outbound", Some("dns"));
    assert_eq!(dig(proxy.port()).as_deref(), Some("10.0.0.1"));

    // The file watcher may reload too: a generation at least this high.
    let reload = |yaml: &str, generation: u64| {
        sidecar.write_config(yaml);
        sidecar.proc.signal("HUP");
        wait_until(Duration::from_secs(10), "the reload", || {
            sidecar.admin_json("/config")["generation"]
                .as_u64()
                .is_some_and(|g| g >= generation)
        });
    };
    reload(&reload_config(&[first.port, second.port]), 2);
    assert_eq!(
        sidecar.listener("outbound", Some("dns")),
        proxy,
        "an unchanged UDP listener keeps running"
    );
    let answers: Vec<Option<String>> = (0..4).map(|_| dig(proxy.port())).collect();
    assert!(
        answers.iter().any(|a| a.as_deref() == Some("10.0.0.2")),
        "new flows use the new endpoint: {answers:?}"
    );

    let now = sidecar.admin_json("/config")["generation"]
        .as_u64()
        .unwrap();
    reload(&reload_config(&[]), now + 1);
    let listeners = sidecar.admin_json("/listeners").to_string();
    assert!(!listeners.contains("\"upstream\":\"dns\""), "{listeners}");
    assert_eq!(dig(proxy.port()), None, "the removed listener stopped");
}
