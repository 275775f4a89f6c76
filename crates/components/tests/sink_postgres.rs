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

    async fn epoch(&self, id: &str) -> Option<i64> {
        self.client()
            .await
            .query_opt(
                "SELECT epoch FROM ttp_sink_checkpoints WHERE sink_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }

    /// The events counted on a checkpoint row (`None`: no row; `Some(None)`: not counted).
    async fn counted_events(&self, id: &str) -> Option<Option<i64>> {
        self.client()
            .await
            .query_opt(
                "SELECT events FROM ttp_sink_checkpoints WHERE sink_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
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
    ledger_events_of(ledger, 0)
}

/// The events of `ledger` as a processor of this `variant` makes them: fees of 100 + variant
/// stroops, so a test can tell which copy wrote a row.
fn ledger_events_of(ledger: u32, variant: u32) -> Vec<TokenTransferEvent> {
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
                amount: (100 + variant).to_string(),
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
    /// Which processor made the events (see [`ledger_events_of`]).
    variant: u32,
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
        let (pace, variant) = (self.pace, self.variant);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut sent = 0;
            for l in ledgers {
                for ev in ledger_events_of(l, variant) {
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
    // The killed run's 60 events and the resumed run's 60, each counted once.
    assert_eq!(pg.counted_events("sink-c@100-119").await, Some(Some(120)));
}

#[tokio::test]
async fn the_checkpoint_row_counts_the_events_of_its_range_again_from_none_when_the_range_is_written_again(
) {
    let Some(pg) = Pg::start() else { return };
    let addr = serve(feed_of(100..=119)).await;
    driver(addr, &pg, "sink-n", 100, 119).run().await.unwrap();
    assert_eq!(pg.counted_events("sink-n@100-119").await, Some(Some(120)));
    // The range complete, a new run writes it again from its start: counted afresh, not 240.
    let addr = serve(feed_of(100..=119)).await;
    driver(addr, &pg, "sink-n", 100, 119).run().await.unwrap();
    assert_eq!(pg.counted_events("sink-n@100-119").await, Some(Some(120)));
    assert_eq!(pg.count().await, 120);
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
    // Reconnecting did not claim the row again: only a start does.
    assert_eq!(pg.epoch("ttp-sink@100-139").await, Some(1));
}

// ---------- fencing of stale copies ----------

#[tokio::test]
async fn a_batch_of_a_copy_whose_row_was_claimed_again_is_rolled_back_whole() {
    let Some(pg) = Pg::start() else { return };
    let mut first = PgSink::new(&pg.url(), "shard@1-9", Readiness::default());
    first.write(&written(1..=2), 2).await.unwrap();
    assert_eq!(first.epoch(), Some(1));
    let mut second = PgSink::new(&pg.url(), "shard@1-9", Readiness::default());
    assert_eq!(second.checkpoint().await.unwrap(), 2);
    assert_eq!(second.epoch(), Some(2));
    let e = first.write(&written(3..=4), 4).await.unwrap_err();
    assert_eq!(e.exit_code(), 65);
    assert_eq!(
        e.to_string(),
        "checkpoint row shard@1-9 was claimed by a newer copy (epoch 2 > mine 1): \
         this copy is stale, stopping without writing"
    );
    // Neither its events nor its checkpoint were written; the newer copy goes on.
    assert_eq!(pg.count().await, 12);
    assert_eq!(pg.checkpoint("shard@1-9").await, Some(2));
    second.write(&written(3..=4), 4).await.unwrap();
    assert_eq!(pg.count().await, 24);
    assert!(first.reset_checkpoint(0).await.is_err(), "fenced for good");
}

/// A `ttp-sink` process of shard `shard@100-159`, reading from `addr`.
fn shard_sink(pg: &Pg, addr: SocketAddr) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ttp-sink"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("SINK", "postgres")
        .env("SINK_ID", "shard")
        .env("DATABASE_URL", pg.url())
        .env("TTP_SERVICE_ADDRESS", addr.to_string())
        .env("START_LEDGER", "100")
        .env("END_LEDGER", "159")
        .env("FLUSH_INTERVAL", "20ms")
        .env("FLUSH_EVENTS", "12")
        .env("MAX_BACKOFF", "200ms")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_second_copy_of_a_shard_fences_the_first_which_exits_65_without_writing_again() {
    let Some(pg) = Pg::start() else { return };
    // The stale copy reads a slow processor on the host the scheduler gave up on; the newer
    // copy, requeued elsewhere, a fast one. Their fees differ, so each row shows its writer.
    let slow = serve(Feed {
        ledgers: (100..=159).collect(),
        pace: Duration::from_millis(100),
        variant: 1,
        ..Default::default()
    })
    .await;
    let fast_feed = Feed {
        ledgers: (100..=159).collect(),
        variant: 2,
        ..Default::default()
    };
    let fast_requests = fast_feed.requests.clone();
    let fast = serve(fast_feed).await;
    let stale = shard_sink(&pg, slow);
    let stale_pid = stale.id();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _guard = KillOnDrop(stale_pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.count_so_far().await < 30 {
        assert!(Instant::now() < deadline, "the first copy wrote nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newer = shard_sink(&pg, fast);
    let newer = tokio::task::spawn_blocking(move || newer.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        newer.status.success(),
        "{}",
        String::from_utf8_lossy(&newer.stderr)
    );
    let stale = tokio::task::spawn_blocking(move || stale.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert_eq!(stale.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(
            "checkpoint row shard@100-159 was claimed by a newer copy (epoch 2 > mine 1): \
             this copy is stale, stopping without writing"
        ),
        "{stderr}"
    );
    // The newer copy resumed after what the first had committed before the claim; the first
    // wrote nothing after it: every ledger from there on is the newer copy's.
    let resumed = fast_requests.lock().unwrap()[0].start_ledger;
    assert!((105..=159).contains(&resumed), "{resumed}");
    let by_writer: Vec<(i64, i64, i64)> = pg
        .client()
        .await
        .query(
            "SELECT amount::bigint - 100, min(ledger_sequence), max(ledger_sequence)
             FROM ttp_events WHERE event_type = 'fee' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let resumed = i64::from(resumed);
    assert_eq!(by_writer, [(1, 100, resumed - 1), (2, resumed, 159)]);
    assert_eq!(pg.count().await, 360);
    assert_eq!(pg.checkpoint("shard@100-159").await, Some(159));
    assert_eq!(pg.epoch("shard@100-159").await, Some(2));
}

/// The schema as the sink made it before checkpoint rows had an epoch.
const SCHEMA_WITHOUT_EPOCH: &str = "
CREATE TABLE ttp_events (
    ledger_sequence BIGINT NOT NULL, transaction_index INTEGER NOT NULL,
    operation_index INTEGER NOT NULL, event_index INTEGER NOT NULL, closed_at TIMESTAMPTZ,
    tx_hash TEXT NOT NULL, contract_address TEXT NOT NULL, event_type TEXT NOT NULL,
    from_address TEXT, to_address TEXT, asset TEXT, amount NUMERIC NOT NULL,
    event JSONB NOT NULL,
    PRIMARY KEY (ledger_sequence, transaction_index, operation_index, event_index)
);
CREATE TABLE ttp_sink_checkpoints (
    sink_id TEXT PRIMARY KEY, last_ledger BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);";

#[tokio::test]
async fn a_database_of_the_previous_version_gets_the_epoch_column_in_place_and_resumes() {
    let Some(pg) = Pg::start() else { return };
    let c = pg.client().await;
    c.batch_execute(SCHEMA_WITHOUT_EPOCH).await.unwrap();
    // Ledgers 100-109 written by the previous version, and another sink's live row.
    c.batch_execute(
        "INSERT INTO ttp_events
         SELECT l, t, 1, t, now(), 'h', 'c', 'transfer', NULL, NULL, NULL, 1, '{}'
         FROM generate_series(100, 109) l, generate_series(0, 5) t;
         INSERT INTO ttp_sink_checkpoints (sink_id, last_ledger)
         VALUES ('old@100-119', 109), ('live', 7000);",
    )
    .await
    .unwrap();
    let feed = feed_of(100..=119);
    let requests = feed.requests.clone();
    let addr = serve(feed).await;
    let s = driver(addr, &pg, "old", 100, 119).run().await.unwrap();
    assert_eq!((s.events, s.through), (60, 119));
    assert_eq!(requests.lock().unwrap()[0].start_ledger, 110);
    assert_eq!(pg.count().await, 120);
    assert_eq!(pg.epoch("old@100-119").await, Some(1));
    assert_eq!(pg.epoch("live").await, Some(0));
    assert_eq!(pg.checkpoint("live").await, Some(7000));
    // Rows written before events were counted stay uncounted: no check can trust a count
    // that misses the first half of the range.
    assert_eq!(pg.counted_events("old@100-119").await, Some(None));
    // A range begun after the upgrade is counted from its start.
    let addr = serve(feed_of(100..=119)).await;
    driver(addr, &pg, "new", 100, 119).run().await.unwrap();
    assert_eq!(pg.counted_events("new@100-119").await, Some(Some(120)));
}

// ---------- many shards at once, partitions ----------

/// 20 shards of 16 ledgers (1000-1319) started together on one empty database.
async fn twenty_shards_at_once(partition_ledgers: Option<u32>) -> Pg {
    let pg = Pg::start().expect("PostgreSQL is installed");
    let addr = serve(feed_of(1000..=1319)).await;
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut runs = Vec::new();
    for shard in 0..20u32 {
        let (from, to) = (1000 + shard * 16, 1015 + shard * 16);
        let mut d = driver(addr, &pg, "many", from, to);
        if let Target::Postgres(p) = d.target {
            d.target = Target::Postgres(p.with_partitions(partition_ledgers));
        }
        let start = start.clone();
        runs.push(tokio::spawn(async move {
            start.wait().await;
            d.run().await
        }));
    }
    for (shard, run) in runs.into_iter().enumerate() {
        let summary = run.await.unwrap();
        let summary = summary.unwrap_or_else(|e| panic!("shard {shard}: {e}"));
        assert_eq!(summary.through, 1015 + shard as u32 * 16, "shard {shard}");
    }
    let keys: (i64, i64) = pg
        .client()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT (ledger_sequence, transaction_index,
                                              operation_index, event_index))
             FROM ttp_events",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(keys, (1920, 1920), "every event once");
    for shard in 0..20u32 {
        let id = format!("many@{}-{}", 1000 + shard * 16, 1015 + shard * 16);
        assert_eq!(pg.checkpoint(&id).await, Some(i64::from(1015 + shard * 16)));
        assert_eq!(pg.epoch(&id).await, Some(1));
    }
    pg
}

async fn relkind_and_partitions(pg: &Pg) -> (String, Vec<String>) {
    let c = pg.client().await;
    let kind: String = c
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE oid = 'ttp_events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let parts = c
        .query(
            "SELECT inhrelid::regclass::text FROM pg_inherits
             WHERE inhparent = 'ttp_events'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (kind, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_shards_starting_at_once_on_an_empty_database_all_finish_with_every_event_once() {
    if flowctl_testkit::postgres::server_bin().is_none() {
        return;
    }
    let pg = twenty_shards_at_once(None).await;
    assert_eq!(relkind_and_partitions(&pg).await, ("r".into(), vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_shards_starting_at_once_into_a_partitioned_table_share_and_create_its_partitions() {
    if flowctl_testkit::postgres::server_bin().is_none() {
        return;
    }
    // Partitions of 24 ledgers straddle the shards of 16: two shards need most of them.
    let pg = twenty_shards_at_once(Some(24)).await;
    let (kind, parts) = relkind_and_partitions(&pg).await;
    assert_eq!(kind, "p");
    let want: Vec<String> = (984..=1296)
        .step_by(24)
        .map(|s| format!("ttp_events_{s}_{}", s + 23))
        .collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(parts, want_sorted);
    let in_first: i64 = pg
        .client()
        .await
        .query_one("SELECT count(*) FROM ttp_events_984_1007", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_first, 8 * 6, "ledgers 1000-1007");
}

#[tokio::test]
async fn a_table_laid_out_otherwise_than_pg_partition_ledgers_says_is_an_error_naming_both() {
    let Some(pg) = Pg::start() else { return };
    let mut plain = PgSink::new(&pg.url(), "plain", Readiness::default());
    plain.write(&written(150..=150), 150).await.unwrap();
    let e = PgSink::new(&pg.url(), "parted", Readiness::default())
        .with_partitions(Some(100))
        .checkpoint()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("table ttp_events is not partitioned") && e.contains("PG_PARTITION_LEDGERS=100"),
        "{e}"
    );
    assert_eq!(relkind_and_partitions(&pg).await.0, "r", "left as it was");
    assert_eq!(pg.count().await, 6);

    pg.client()
        .await
        .batch_execute("DROP TABLE ttp_events")
        .await
        .unwrap();
    let mut parted =
        PgSink::new(&pg.url(), "parted", Readiness::default()).with_partitions(Some(100));
    parted.write(&written(150..=150), 150).await.unwrap();
    let e = PgSink::new(&pg.url(), "plain", Readiness::default())
        .checkpoint()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("table ttp_events is partitioned") && e.contains("PG_PARTITION_LEDGERS"),
        "{e}"
    );
    // Partitions of another size would overlap the ones there: named, not half-made.
    let e = PgSink::new(&pg.url(), "other", Readiness::default())
        .with_partitions(Some(64))
        .write(&written(150..=150), 150)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ttp_events_128_191") && e.contains("PG_PARTITION_LEDGERS=64"),
        "{e}"
    );
    assert_eq!(
        relkind_and_partitions(&pg).await,
        ("p".into(), vec!["ttp_events_100_199".into()])
    );
}
