//! WebSocket upgrades passed through the sidecar (Python websockets client).

use mesh_tests::{python, service};

use crate::inbound_sidecar;

#[test]
fn websocket_messages_and_close_codes_pass_through() {
    let (_app, app) = service("demo-ws", &[]);
    let sidecar = inbound_sidecar(app, "");
    let url = format!("ws://{}/chat", sidecar.listener("inbound", None));
    let echo = python("ws_client.py", &[&url, "echo"]);
    assert_eq!(
        echo,
        serde_json::json!({"text": true, "binary": true, "big": true})
    );
    let closed = python("ws_client.py", &[&url, "close", "4001", "client-bye"]);
    assert_eq!(closed["close_code"], 4001, "{closed}");
    assert_eq!(closed["close_reason"], "client-bye", "{closed}");
    let server = python(
        "ws_client.py",
        &[&url, "server_close", "4002", "server-bye"],
    );
    assert_eq!(server["close_code"], 4002, "{server}");
    assert_eq!(server["close_reason"], "server-bye", "{server}");
}
