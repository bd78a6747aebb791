//! `demo-grpc`: the `orders.v1.Orders` gRPC service over h2c, one RPC of each
//! kind (unary, server streaming, client streaming, bidirectional) so tests can
//! check the sidecar carries all four. Reads: gRPC requests. Writes: orders
//! from [`mesh_examples::orders`]. Errors: NOT_FOUND for unknown ids,
//! INVALID_ARGUMENT for bad `ListOrders` arguments.

use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures_util::{Stream, StreamExt as _};
use mesh_examples::lifecycle::{self, ListenArgs, DRAIN_DEADLINE};
use mesh_examples::orders::orders_server::{Orders, OrdersServer};
use mesh_examples::orders::{
    self, ChatMessage, GetOrderRequest, ListOrdersRequest, Order, UploadSummary,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

/// Most orders one `ListOrders` call streams.
const MAX_LIST_COUNT: i32 = 10_000;
/// Longest pause `ListOrders` accepts between two orders.
const MAX_INTERVAL_MS: i32 = 60_000;

/// The orders.v1 gRPC demo service (h2c): unary, server, client and bidi streaming.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    /// Service name, for logs only.
    #[arg(long, default_value = "orders")]
    name: String,
}

type OrderStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct OrdersService;

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let id = request.into_inner().id;
        orders::lookup(&id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("order {id} not found")))
    }

    type ListOrdersStream = OrderStream<Order>;

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<Self::ListOrdersStream>, Status> {
        let ListOrdersRequest { count, interval_ms } = request.into_inner();
        if count <= 0 {
            return Err(Status::invalid_argument(format!(
                "count must be positive, got {count}"
            )));
        }
        if !(0..=MAX_INTERVAL_MS).contains(&interval_ms) {
            return Err(Status::invalid_argument(format!(
                "interval_ms must be between 0 and {MAX_INTERVAL_MS}, got {interval_ms}"
            )));
        }
        let count = count.min(MAX_LIST_COUNT);
        let interval = Duration::from_millis(u64::from(interval_ms.unsigned_abs()));
        // The first order goes out at once, then one per interval.
        let stream = futures_util::stream::unfold(1, move |n| async move {
            if n > count {
                return None;
            }
            if n > 1 {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(orders::order(n)), n + 1))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn upload_orders(
        &self,
        request: Request<Streaming<Order>>,
    ) -> Result<Response<UploadSummary>, Status> {
        let mut uploads = request.into_inner();
        let mut summary = UploadSummary::default();
        while let Some(order) = uploads.message().await? {
            summary.count = summary.count.saturating_add(1);
            let cents = i64::from(order.quantity).saturating_mul(order.price_cents);
            summary.total_cents = summary.total_cents.saturating_add(cents);
        }
        Ok(Response::new(summary))
    }

    type ChatStream = OrderStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        // Each message is answered as it arrives; the reply stream ends with the requests.
        let replies = request.into_inner().map(|message| {
            message.map(|ChatMessage { text }| ChatMessage {
                text: format!("echo: {text}"),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_tracing();
    let args = Args::parse();
    let span = tracing::info_span!("demo-grpc", service = %args.name);
    run(args).instrument(span).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = lifecycle::bind_and_announce(args.listen.listen).await?;

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    // grpc.health.v1: "" and "orders.v1.Orders" answer SERVING.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<OrdersServer<OrdersService>>().await;
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(OrdersServer::new(OrdersService))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            // An error means the sender is gone, which also means stop.
            let _ = drain_rx.await;
        });
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return served.context("gRPC server failed"),
        () = lifecycle::shutdown_signal() => {}
    }
    // Stop accepting, and give open calls (bidi streams included) a deadline.
    let _ = drain_tx.send(());
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(served) => served.context("gRPC server failed while draining"),
        Err(_) => {
            tracing::warn!(deadline = ?DRAIN_DEADLINE, "drain deadline passed, dropping open calls");
            Ok(())
        }
    }
}
