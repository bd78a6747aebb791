//! Generated messages and gRPC stubs for `orders.v1` (`protos/orders.proto`),
//! plus the catalogue both sides agree on: which orders exist and what they hold.
//! `demo-grpc` serves them; `demo-rest` calls `GetOrder` as a client.

tonic::include_proto!("orders.v1");

/// The order with sequence number `n`: item `widget-<n>`, quantity `n`,
/// price `n * 100` cents.
pub fn order(n: i32) -> Order {
    Order {
        id: n.to_string(),
        item: format!("widget-{n}"),
        quantity: n,
        price_cents: i64::from(n) * 100,
    }
}

/// The stored order with this id, if any: only ids "1" to "9" exist.
pub fn lookup(id: &str) -> Option<Order> {
    match id.as_bytes() {
        [digit @ b'1'..=b'9'] => Some(order(i32::from(digit - b'0'))),
        _ => None,
    }
}
