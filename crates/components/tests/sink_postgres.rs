//! The PostgreSQL sink against a real PostgreSQL server started by each test, fed by a real
//! in-test `EventService` gRPC server.

mod support;
use support::free_port;

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowctl_components::sink::driver::{Driver, Target};
use flowctl_components::sink::health::Readiness;
use flowctl_components::sink::postgres::{checkpoint_id, PgSink};
use flowctl_components::sink::LedgerEvents;
use flowctl_proto::asset::{asset::AssetType, Asset};
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer::{EventMeta, Fee, TokenTransferEvent, Transfer};
use flowctl_proto::token_transfer_service::event_service_server::{
    EventService, EventServiceServer,
};
use flowctl_proto::token_transfer_service::GetEventsRequest;
use flowctl_testkit::postgres::{Durability, PgCluster};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

// ---------- a PostgreSQL cluster in a temp dir ----------

/// A throwaway cluster (fsync off) and the queries the tests ask it.
struct Pg(PgCluster);

impl std::ops::Deref for Pg {
    type Target = PgCluster;
    fn deref(&self) -> &PgCluster {
        &self.0
    }
}

impl Pg {
    fn start() -> Option<Pg> {
        PgCluster::start(Durability::Off).map(Pg)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }

    async fn count(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM ttp_events", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Rows so far, 0 while the table does not exist yet.
    async fn count_so_far(&self) -> i64 {
        match tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                c.query_one("SELECT count(*) FROM ttp_events", &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(0)
            }
            Err(_) => 0,
        }
    }

    async fn checkpoint(&self, id: &str) -> Option<i64> {
        self.client()
            .await
            .query_opt(
                "SELECT last_ledger FROM ttp_sink_checkpoints WHERE sink_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }
}

// ---------- an EventService that streams prepared events ----------

const ACCOUNT_A: &str = "GDB6H4XQL3PJ6PKD754FTXCDD2L3HQPWZ4PL7HENIVFV2N7VFUTOE2DF";
const ACCOUNT_B: &str = "GA2ROVQ27NB346IIKYMWNLC7LNH7C6OT6CTMDSDDXEKMF64NJZSJN7UZ";
const XLM_SAC: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";

/// Three fees then three transfers per ledger.
fn ledger_events(ledger: u32) -> Vec<TokenTransferEvent> {
    let native = Some(Asset {
        asset_type: Some(AssetType::Native(true)),
    });
    let meta = |tx: u32, op: Option<u32>| EventMeta {
        ledger_sequence: ledger,
        closed_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + i64::from(ledger) * 5,
            nanos: 0,
        }),
        tx_hash: format!("{ledger:032x}{tx:032x}"),
        transaction_index: tx,
        operation_index: op,
        contract_address: XLM_SAC.into(),
        to_muxed_info: None,
    };
    let mut out = Vec::new();
    for tx in 1..=3 {
        out.push(TokenTransferEvent {
            meta: Some(meta(tx, None)),
            event: Some(Event::Fee(Fee {
                from: ACCOUNT_A.into(),
                asset: native.clone(),
                amount: "100".into(),
            })),
        });
    }
    for tx in 1..=3 {
        out.push(TokenTransferEvent {
            meta: Some(meta(tx, Some(1))),
            event: Some(Event::Transfer(Transfer {
                from: ACCOUNT_A.into(),
                to: ACCOUNT_B.into(),
                asset: native.clone(),
                amount: format!("{}", 1_000_000 + u64::from(ledger) * 10 + u64::from(tx)),
            })),
        });
    }
    out
}

/// A feed of the events of `ledgers`.
fn feed_of(ledgers: std::ops::RangeInclusive<u32>) -> Feed {
    Feed {
        ledgers: ledgers.collect(),
        ..Default::default()
    }
}

/// The events of `ledgers` as the sink writes them.
fn written(ledgers: std::ops::RangeInclusive<u32>) -> Vec<LedgerEvents> {
    ledgers
        .map(|l| LedgerEvents {
            ledger: l,
            events: ledger_events(l),
        })
        .collect()
}

#[derive(Clone, Default)]
struct Feed {
    ledgers: Vec<u32>,
    /// Break the next stream after this many events (once).
    break_after: Arc<Mutex<Option<usize>>>,
    /// Pause between ledgers.
    pace: Duration,
    requests: Arc<Mutex<Vec<GetEventsRequest>>>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<TokenTransferEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Feed {
    type GetTTPEventsStream = EventStream;

    async fn get_ttp_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        self.requests.lock().unwrap().push(req);
        let live = req.end_ledger == 0 || req.end_ledger < req.start_ledger;
        let ledgers: Vec<u32> = self
            .ledgers
            .iter()
            .copied()
            .filter(|l| *l >= req.start_ledger && (live || *l <= req.end_ledger))
            .collect();
        let break_after = self.break_after.lock().unwrap().take();
        let pace = self.pace;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut sent = 0;
            for l in ledgers {
                for ev in ledger_events(l) {
                    if Some(sent) == break_after {
                        let _ = tx
                            .send(Err(Status::unavailable("upstream went away")))
                            .await;
                        return;
                    }
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                tokio::time::sleep(pace).await;
            }
            if live {
                // A live processor waits for more ledgers.
                tx.closed().await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn serve(feed: Feed) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventServiceServer::new(feed))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A bounded run of sink `id`, with the checkpoint row `ttp-sink` gives it: `ID@START-END`.
fn driver(addr: SocketAddr, pg: &Pg, id: &str, start: u32, end: u32) -> Driver {
    let readiness = Readiness::default();
    Driver {
        addr: addr.to_string(),
        start,
        end: Some(end),
        target: Target::Postgres(
            PgSink::new(
                &pg.url(),
                &checkpoint_id(id, start, Some(end)),
                readiness.clone(),
            )
            .with_max_backoff(Duration::from_millis(200)),
        ),
        readiness,
        metrics: Default::default(),
        flush_events: 10,
        flush_interval: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        dead_letters: None,
    }
}

#[tokio::test]
async fn schema_is_created_on_start_and_a_bounded_run_writes_every_event() {
    let Some(pg) = Pg::start() else { return };
    let feed = feed_of(100..=119);
    let addr = serve(feed).await;
    let summary = driver(addr, &pg, "sink-a", 100, 119).run().await.unwrap();
    assert_eq!(summary.events, 120);
    assert_eq!(summary.through, 119);
    let c = pg.client().await;
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec!["ttp_events", "ttp_sink_checkpoints"]);
    assert_eq!(pg.count().await, 120);
    assert_eq!(pg.checkpoint("sink-a@100-119").await, Some(119));
    let row = c
        .query_one(
            "SELECT event_type, operation_index, amount::text, event->'meta'->>'ledgerSequence'
             FROM ttp_events WHERE ledger_sequence = 105 AND event_index = 4",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "transfer");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, String>(2), "1001052");
    assert_eq!(row.get::<_, String>(3), "105");
}

#[tokio::test]
async fn writing_the_same_ledger_twice_keeps_one_copy() {
    let Some(pg) = Pg::start() else { return };
    let mut sink = PgSink::new(&pg.url(), "sink-b", Readiness::default());
    let batch = vec![LedgerEvents {
        ledger: 200,
        events: ledger_events(200),
    }];
    sink.write(&batch, 200).await.unwrap();
    sink.write(&batch, 200).await.unwrap();
    assert_eq!(pg.count().await, 6);
    // An older checkpoint never moves it back.
    sink.write(&[], 150).await.unwrap();
    assert_eq!(pg.checkpoint("sink-b").await, Some(200));
    assert_eq!(sink.checkpoint().await.unwrap(), 200);
}

#[tokio::test]
async fn a_replay_restores_a_row_altered_by_hand_and_an_identical_replay_rewrites_nothing() {
    let Some(pg) = Pg::start() else { return };
    let mut sink = PgSink::new(&pg.url(), "sink-r", Readiness::default());
    let batch = vec![LedgerEvents {
        ledger: 300,
        events: ledger_events(300),
    }];
    sink.write(&batch, 300).await.unwrap();
    let c = pg.client().await;
    let key = "ledger_sequence = 300 AND event_index = 4";
    let row = format!("FROM ttp_events WHERE {key}");
    let original: String = c
        .query_one(&format!("SELECT amount::text {row}"), &[])
        .await
        .unwrap()
        .get(0);
    // As an older, buggy processor would have written it.
    c.execute(
        &format!("UPDATE ttp_events SET amount = 1, event = '{{}}' WHERE {key}"),
        &[],
    )
    .await
    .unwrap();
    sink.write(&batch, 300).await.unwrap();
    let (amount, ledger): (String, String) = c
        .query_one(
            &format!("SELECT amount::text, event->'meta'->>'ledgerSequence' {row}"),
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        (amount.as_str(), ledger.as_str()),
        (original.as_str(), "300")
    );
    assert_eq!(pg.count().await, 6);
    // Replaying what is stored leaves every row version as it was.
    let versions = "SELECT string_agg(xmin::text, ',' ORDER BY event_index) FROM ttp_events";
    let before: String = c.query_one(versions, &[]).await.unwrap().get(0);
    sink.write(&batch, 300).await.unwrap();
    let after: String = c.query_one(versions, &[]).await.unwrap().get(0);
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_ledger_the_table_rejects_fails_the_sink_naming_it_after_writing_the_ledgers_before_it() {
    let Some(pg) = Pg::start() else { return };
    let feed = feed_of(100..=119);
    let addr = serve(feed).await;
    // The schema first, then a constraint that ledger 105's events break.
    PgSink::new(&pg.url(), "setup", Readiness::default())
        .checkpoint()
        .await
        .unwrap();
    pg.client()
        .await
        .batch_execute(
            "ALTER TABLE ttp_events ADD CONSTRAINT not_105 CHECK (ledger_sequence <> 105)",
        )
        .await
        .unwrap();
    let mut d = driver(addr, &pg, "sink-f", 100, 119);
    d.flush_events = 1000;
    d.flush_interval = Duration::from_secs(30);
    let e = d.run().await.unwrap_err().to_string();
    assert!(e.contains("ledger 105"), "{e}");
    assert!(e.contains("not_105"), "{e}");
    assert_eq!(pg.count().await, 30, "ledgers 100-104 are kept");
    assert_eq!(pg.checkpoint("sink-f@100-119").await, Some(104));
}

#[tokio::test]
async fn a_bounded_run_started_again_resumes_after_its_own_checkpoint() {
    let Some(pg) = Pg::start() else { return };
    let feed = feed_of(100..=119);
    let requests = feed.requests.clone();
    let addr = serve(feed).await;
    // What a run of 100–119 killed after ledger 109 left behind.
    let mut killed = PgSink::new(
        &pg.url(),
        &checkpoint_id("sink-c", 100, Some(119)),
        Readiness::default(),
    );
    let first: Vec<LedgerEvents> = written(100..=109);
    killed.write(&first, 109).await.unwrap();
    let s = driver(addr, &pg, "sink-c", 100, 119).run().await.unwrap();
    assert_eq!(s.events, 60);
    let starts: Vec<u32> = requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.start_ledger)
        .collect();
    assert_eq!(starts, vec![110]);
    assert_eq!(pg.count().await, 120);
    assert_eq!(pg.checkpoint("sink-c@100-119").await, Some(119));
}

#[tokio::test]
async fn a_bounded_run_after_a_live_run_writes_its_range_and_leaves_the_live_checkpoint_alone() {
    let Some(pg) = Pg::start() else { return };
    let feed = feed_of(100..=119);
    let requests = feed.requests.clone();
    let addr = serve(feed).await;
    // The live run of the same sink is far ahead.
    let mut live = PgSink::new(
        &pg.url(),
        &checkpoint_id("sink-e", 0, None),
        Readiness::default(),
    );
    live.write(&[], 500).await.unwrap();
    let s = driver(addr, &pg, "sink-e", 100, 119).run().await.unwrap();
    assert_eq!((s.events, s.through), (120, 119));
    assert_eq!(pg.count().await, 120);
    assert_eq!(pg.checkpoint("sink-e").await, Some(500));
    assert_eq!(pg.checkpoint("sink-e@100-119").await, Some(119));
    // The same range asked for again (a replay) is written again from its start, and adds
    // nothing twice.
    let again = driver(addr, &pg, "sink-e", 100, 119).run().await.unwrap();
    assert_eq!(again.events, 120);
    let starts: Vec<u32> = requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.start_ledger)
        .collect();
    assert_eq!(starts, vec![100, 100]);
    assert_eq!(pg.count().await, 120);
    assert_eq!(pg.checkpoint("sink-e@100-119").await, Some(119));
}

#[tokio::test]
async fn stream_broken_mid_ledger_reconnects_from_the_next_ledger_without_gap_or_duplicate() {
    let Some(pg) = Pg::start() else { return };
    let feed = Feed {
        ledgers: (100..=119).collect(),
        break_after: Arc::new(Mutex::new(Some(20))),
        ..Default::default()
    };
    let requests = feed.requests.clone();
    let addr = serve(feed).await;
    let s = driver(addr, &pg, "sink-d", 100, 119).run().await.unwrap();
    assert_eq!(s.through, 119);
    // Event 20 is the third of ledger 103: ledgers 100–102 were complete and kept.
    let starts: Vec<u32> = requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.start_ledger)
        .collect();
    assert_eq!(starts, vec![100, 103]);
    assert_eq!(pg.count().await, 120);
    let per_ledger: Vec<i64> = pg
        .client()
        .await
        .query(
            "SELECT count(*) FROM ttp_events GROUP BY ledger_sequence ORDER BY ledger_sequence",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(per_ledger, vec![6; 20]);
}

fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

#[tokio::test]
async fn database_down_then_up_reports_not_ready_and_loses_no_event() {
    let Some(pg) = Pg::start() else { return };
    let feed = Feed {
        ledgers: (100..=139).collect(),
        pace: Duration::from_millis(100),
        ..Default::default()
    };
    let addr = serve(feed).await;
    let health = free_port();
    let mut sink = Command::new(env!("CARGO_BIN_EXE_ttp-sink"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("SINK", "postgres")
        .env("DATABASE_URL", pg.url())
        .env("TTP_SERVICE_ADDRESS", addr.to_string())
        .env("START_LEDGER", "100")
        .env("END_LEDGER", "139")
        .env("HEALTH_PORT", health.to_string())
        .env("FLUSH_INTERVAL", "20ms")
        .env("MAX_BACKOFF", "200ms")
        .spawn()
        .unwrap();
    let pid = sink.id();
    // Kills the sink if an assertion fails before it exits by itself.
    struct KillOnPanic(u32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = Command::new("kill").arg(self.0.to_string()).status();
            }
        }
    }
    let _guard = KillOnPanic(pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.count_so_far().await < 12 {
        assert!(Instant::now() < deadline, "no rows written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.down();
    let mut saw_not_ready = false;
    while Instant::now() < deadline {
        if let Some((503, body)) = http_status(health, "/health") {
            assert!(body.contains("unhealthy"), "{body}");
            assert_eq!(http_status(health, "/ready").map(|r| r.0), Some(503));
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_not_ready, "/health never reported the database outage");
    assert!(
        sink.try_wait().unwrap().is_none(),
        "the sink waits for the database"
    );
    pg.up();
    let mut healthy_again = false;
    while Instant::now() < deadline && sink.try_wait().unwrap().is_none() {
        if let Some((200, body)) = http_status(health, "/health") {
            assert!(body.contains("events_written_total"), "{body}");
            healthy_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || sink.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert!(healthy_again, "/health never recovered");
    assert_eq!(pg.count().await, 240);
    assert_eq!(pg.checkpoint("ttp-sink@100-139").await, Some(139));
}
