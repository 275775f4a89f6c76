//! Arrow Flight for ranges of ledgers: a server over any [`RangeProducer`] and a reader that
//! survives its server going away.
//!
//! `DoGet` takes a [`LedgerTicket`]; `GetFlightInfo` takes a descriptor whose path is
//! `["ledgers", "A-B"]` (or a ticket's JSON as its command); `ListFlights` lists the range the
//! service is configured for; `GetSchema` gives the schema. Every batch message carries the
//! ledger it goes up to in `app_metadata` (`{"through_ledger": N}`), so a reader knows how
//! far a flight got even across ledgers without rows.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::SchemaRef;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::ticket::{self, LedgerTicket};
use crate::backoff::Backoff;

/// Largest Flight message a reader accepts: one batch whole (a busy ledger's XDR, or the
/// events of a batch of ledgers).
pub const MAX_MESSAGE: usize = 256 << 20;

/// A batch of a flight and the ledger it goes up to.
pub type Batches = BoxStream<'static, Result<(RecordBatch, u32), Status>>;

/// What a Flight service serves: batches for a range of ledgers, none splitting a ledger.
#[tonic::async_trait]
pub trait RangeProducer: Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    /// The range `ListFlights` offers (the component's START_LEDGER/END_LEDGER).
    fn offered(&self) -> Option<LedgerTicket>;
    /// The batches of `range`, in ledger order. A bounded range's stream ends after its last
    /// ledger; one stopped early ends with an error, never as if complete.
    async fn batches(&self, range: LedgerTicket) -> Result<Batches, Status>;
}

/// The Flight service of a [`RangeProducer`].
pub struct RangeFlights<P> {
    producer: Arc<P>,
}

impl<P: RangeProducer> RangeFlights<P> {
    pub fn new(producer: Arc<P>) -> Self {
        RangeFlights { producer }
    }

    /// The tonic service, with message limits fit for whole batches.
    pub fn into_server(self) -> arrow_flight::flight_service_server::FlightServiceServer<Self> {
        arrow_flight::flight_service_server::FlightServiceServer::new(self)
            .max_encoding_message_size(MAX_MESSAGE)
            .max_decoding_message_size(4 << 20)
    }

    fn info(&self, range: LedgerTicket) -> Result<FlightInfo, Status> {
        let info = FlightInfo::new()
            .try_with_schema(&self.producer.schema())
            .map_err(|e| Status::internal(format!("schema: {e}")))?
            .with_descriptor(FlightDescriptor::new_path(range.path()))
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(range.to_bytes())))
            .with_ordered(true);
        Ok(info)
    }
}

/// The range a descriptor names: a path `["ledgers", "A-B"]`, or a ticket as its command.
fn described(d: &FlightDescriptor) -> Result<LedgerTicket, Status> {
    let parsed = if !d.cmd.is_empty() {
        LedgerTicket::parse(&d.cmd)
    } else {
        match d.path.as_slice() {
            [first, range] if first == ticket::PATH => LedgerTicket::parse_range(range),
            _ => Err(format!(
                "descriptor path {:?}: a flight is [\"{}\", \"A-B\"]",
                d.path,
                ticket::PATH
            )),
        }
    };
    parsed.map_err(Status::invalid_argument)
}

/// The messages of a flight: its schema, then each batch with the ledger it goes up to.
fn encode(schema: SchemaRef, batches: Batches) -> impl Stream<Item = Result<FlightData, Status>> {
    let options = IpcWriteOptions::default();
    let first: FlightData = SchemaAsIpc::new(&schema, &options).into();
    let mut tracker = DictionaryTracker::new(false);
    let mut context = IpcWriteContext::default();
    let generator = IpcDataGenerator::default();
    let rest = batches.flat_map(move |item| {
        let messages: Vec<Result<FlightData, Status>> = match item {
            Err(status) => vec![Err(status)],
            Ok((batch, through)) => {
                match generator.encode(&batch, &mut tracker, &options, &mut context) {
                    Err(e) => vec![Err(Status::internal(format!("encoding a batch: {e}")))],
                    Ok((dictionaries, data)) => {
                        let mut out: Vec<Result<FlightData, Status>> = dictionaries
                            .into_iter()
                            .map(|d| Ok(FlightData::from(d)))
                            .collect();
                        let mut data = FlightData::from(data);
                        data.app_metadata = ticket::through_metadata(through);
                        out.push(Ok(data));
                        out
                    }
                }
            }
        };
        futures::stream::iter(messages)
    });
    futures::stream::once(async { Ok(first) }).chain(rest)
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<P: RangeProducer> FlightService for RangeFlights<P> {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: the service needs no authentication",
        ))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos: Vec<Result<FlightInfo, Status>> = self
            .producer
            .offered()
            .map(|r| self.info(r))
            .into_iter()
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let range = described(request.get_ref())?;
        Ok(Response::new(self.info(range)?))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "a flight is ready at once: use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        described(request.get_ref())?;
        let options = IpcWriteOptions::default();
        let result = SchemaAsIpc::new(&self.producer.schema(), &options)
            .try_into()
            .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let range =
            LedgerTicket::parse(&request.get_ref().ticket).map_err(Status::invalid_argument)?;
        tracing::info!(%range, "DoGet");
        let batches = self.producer.batches(range).await?;
        Ok(Response::new(Box::pin(encode(
            self.producer.schema(),
            batches,
        ))))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("flights are read, not written"))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("flights are read, not exchanged"))
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}

/// Reads a range's flight from a server in order, without gaps or repeats, across the
/// server going away: it reconnects with backoff and asks again from the ledger after the
/// last one it has whole. Errors a retry cannot fix (a bad ticket, data loss) end it.
pub struct FlightFeed {
    endpoint: Endpoint,
    /// The next ledger to ask for.
    next: u32,
    end: Option<u32>,
    stream: Option<FlightDataDecoder>,
    backoff: Backoff,
    /// Called with whether the server is reached, for readiness.
    on_connected: Box<dyn Fn(bool) + Send + Sync>,
}

impl FlightFeed {
    pub fn new(endpoint: Endpoint, start: u32, end: Option<u32>, backoff: Backoff) -> Self {
        FlightFeed {
            endpoint,
            next: start,
            end,
            stream: None,
            backoff,
            on_connected: Box::new(|_| {}),
        }
    }

    pub fn on_connected(mut self, f: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.on_connected = Box::new(f);
        self
    }

    fn done(&self) -> bool {
        self.end.is_some_and(|e| self.next > e)
    }

    /// The next batch and the ledger it goes up to; `None` once a bounded range is read.
    pub async fn next(&mut self) -> Result<Option<(RecordBatch, u32)>, Status> {
        loop {
            if self.done() {
                return Ok(None);
            }
            let stream = match &mut self.stream {
                Some(s) => s,
                None => match self.connect().await {
                    Ok(s) => self.stream.insert(s),
                    Err(status) if fatal(&status) => return Err(status),
                    Err(status) => {
                        tracing::warn!(upstream = %self.endpoint.uri(), %status, "flight unavailable; retrying");
                        self.lost().await;
                        continue;
                    }
                },
            };
            match stream.next().await {
                Some(Ok(data)) => {
                    let DecodedPayload::RecordBatch(batch) = data.payload else {
                        continue;
                    };
                    let Some(through) = ticket::parse_through(&data.inner.app_metadata) else {
                        return Err(Status::internal(
                            "a flight batch without its through_ledger metadata: the server is not a flowctl Arrow component",
                        ));
                    };
                    // A repeat after a reconnect: already delivered.
                    if through < self.next {
                        continue;
                    }
                    self.next = through.saturating_add(1);
                    self.backoff.reset();
                    return Ok(Some((batch, through)));
                }
                Some(Err(e)) => {
                    let status = match e {
                        FlightError::Tonic(s) => *s,
                        other => Status::internal(other.to_string()),
                    };
                    if fatal(&status) {
                        return Err(status);
                    }
                    tracing::warn!(upstream = %self.endpoint.uri(), next = self.next, %status, "flight broken; reconnecting");
                    self.lost().await;
                }
                None => {
                    if self.done() {
                        return Ok(None);
                    }
                    tracing::warn!(next = self.next, "the flight ended early; reconnecting");
                    self.lost().await;
                }
            }
        }
    }

    async fn lost(&mut self) {
        self.stream = None;
        (self.on_connected)(false);
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    async fn connect(&mut self) -> Result<FlightDataDecoder, Status> {
        let channel: Channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("{}: {e}", self.endpoint.uri())))?;
        let mut client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(4 << 20);
        let range = LedgerTicket::new(self.next, self.end);
        let response = client
            .do_get(Ticket::new(range.to_bytes()))
            .await?
            .into_inner();
        (self.on_connected)(true);
        Ok(FlightDataDecoder::new(
            response.map_err(|s| FlightError::Tonic(Box::new(s))),
        ))
    }
}

/// Errors asking again cannot fix.
fn fatal(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::DataLoss
            | tonic::Code::OutOfRange
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
    )
}

/// An endpoint for `host:port` or a URL.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(url)
        .map(|e| e.connect_timeout(Duration::from_secs(5)))
        .map_err(|e| format!("address {address:?}: {e}"))
}

/// Where a Flight service listens: the same variables for every Arrow component.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// Arrow Flight port (bare number; default 8815 for the source, 8816 for the processor).
    /// FLIGHT_PORT is read when PORT is absent.
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    #[arg(long, env = "FLIGHT_PORT", hide = true)]
    flight_port: Option<u16>,
    /// Address to bind; loopback unless told otherwise.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
}

impl ListenArgs {
    /// The address to bind, `default_port` when neither PORT nor FLIGHT_PORT is set.
    pub fn addr(&self, default_port: u16) -> std::net::SocketAddr {
        let port = self.port.or(self.flight_port).unwrap_or(default_port);
        std::net::SocketAddr::new(self.bind, port)
    }
}

/// Serves `producer`'s flights on `listener` until `shutdown`. Flights end on the signal; a
/// reader that does not read (or holds its connection) is not waited for beyond the grace
/// period.
pub async fn serve<P: RangeProducer>(
    producer: Arc<P>,
    listener: tokio::net::TcpListener,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<(), tonic::transport::Error> {
    let routes = tonic::service::Routes::new(RangeFlights::new(producer).into_server());
    serve_routes(routes, listener, shutdown).await
}

/// Serves gRPC `routes` (a Flight service among others, e.g. a component's own gRPC
/// service on the same port) as [`serve`] does.
pub async fn serve_routes(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.requested(),
        );
    tokio::select! {
        served = server => served,
        _ = shutdown.grace_over() => {
            tracing::warn!("closing the connections still open");
            Ok(())
        }
    }
}
