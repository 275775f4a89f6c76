//! The data-lake backend: a Galexie / CDP tree (`.config.json` manifest, `%08X--%d-%d/`
//! partitions, zstd `LedgerCloseMetaBatch` objects) on a local path, `file://`, `s3://` or
//! `gs://`. Objects for a window of ledgers are fetched concurrently (bounded), each with
//! retries.
//!
//! Object storage other than AWS and Google (MinIO, an emulator, a mirror) is reached through
//! an endpoint: `DATALAKE_ENDPOINT`, or the stores' own variables (`AWS_ENDPOINT_URL`,
//! `GOOGLE_BASE_URL`). A plain `http://` endpoint is allowed as such; the public clouds are
//! only spoken to over HTTPS.

use std::sync::Arc;
use std::time::Duration;

use flowctl_proto::raw_ledger_service::RawLedger;
use flowctl_sdk::DeadLetters;
use futures::StreamExt;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore};
use stellar_ledgers::{Continuity, DataLakeConfig, Step};
use stellar_xdr::{Limits, WriteXdr};

use super::SourceError;

/// Objects fetched at once ahead of the consumer.
pub const DEFAULT_PREFETCH: usize = 8;
const ATTEMPTS: u32 = 5;

pub struct DataLake {
    url: String,
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    manifest: DataLakeConfig,
    prefetch: usize,
    /// Set with `on_error: dead-letter`: where the ledgers of an object that does not decode
    /// are recorded before the stream goes on past them.
    dead_letters: Option<Box<DeadLetters>>,
}

/// One object as read: its ledgers, or why they could not be decoded and its bytes.
struct Object {
    key: String,
    start: u32,
    ledgers: Result<Vec<RawLedger>, (SourceError, Vec<u8>)>,
}

impl DataLake {
    /// Opens the lake at `url` and reads its manifest. `endpoint` replaces the object store's
    /// service URL (S3-compatible storage, a GCS emulator); it is ignored for local lakes.
    pub async fn open(
        url: &str,
        endpoint: Option<&str>,
        prefetch: usize,
    ) -> Result<Self, SourceError> {
        let lake_err = |message: String| SourceError::DataLake {
            url: url.to_string(),
            message,
        };
        let (store, root) = store_for(url, endpoint).map_err(lake_err)?;
        let manifest_key = child(&root, ".config.json");
        let bytes = get_with_retry(store.as_ref(), &manifest_key)
            .await?
            .ok_or_else(|| {
                lake_err("no .config.json at the root: is this a Galexie data lake?".into())
            })?;
        let manifest = DataLakeConfig::parse(std::path::Path::new(".config.json"), &bytes)
            .map_err(|e| lake_err(e.to_string()))?;
        Ok(DataLake {
            url: url.to_string(),
            store,
            root,
            manifest,
            prefetch: prefetch.max(1),
            dead_letters: None,
        })
    }

    /// Ledgers of an object that does not decode become dead letters in `letters` instead
    /// of ending the stream; downstream they arrive as markers (see [`is_dead_letter`]).
    pub fn with_dead_letters(mut self, letters: DeadLetters) -> Self {
        self.dead_letters = Some(Box::new(letters));
        self
    }

    pub fn manifest(&self) -> &DataLakeConfig {
        &self.manifest
    }

    pub fn batch_size(&self) -> u32 {
        self.manifest
            .ledgers_per_batch
            .saturating_mul(self.prefetch as u32)
    }

    pub async fn fetch(&self, from: u32, max: u32) -> Result<Vec<RawLedger>, SourceError> {
        let last = from.saturating_add(max.max(1) - 1);
        let mut starts = Vec::new();
        let mut s = self.manifest.batch_start(from);
        while s <= last {
            starts.push(s);
            match s.checked_add(self.manifest.ledgers_per_batch) {
                Some(n) => s = n,
                None => break,
            }
        }
        let mut objects = futures::stream::iter(starts)
            .map(|start| self.read_object(start))
            .buffered(self.prefetch);
        let mut out = Vec::new();
        let mut continuity = Continuity::starting_at(from);
        while let Some(object) = objects.next().await {
            let Object {
                key,
                start,
                ledgers,
            } = match object {
                Ok(Some(object)) => object,
                // A missing object is the lake's tip: later ones cannot be served in order.
                Ok(None) => break,
                // Serve what came before a bad object; the next call reports it.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            let ledgers = match ledgers {
                Ok(ledgers) => ledgers,
                Err((e, bytes)) => match &self.dead_letters {
                    Some(letters) => {
                        match self.set_aside(letters, start, from, last, &e, &bytes).await {
                            Ok(markers) => markers,
                            // As without dead letters: what came before is served first.
                            Err(_) if !out.is_empty() => break,
                            Err(e) => return Err(e),
                        }
                    }
                    None if !out.is_empty() => break,
                    None => {
                        return Err(SourceError::Unreadable {
                            seq: start.max(from),
                            message: e.to_string(),
                        })
                    }
                },
            };
            for ledger in ledgers.into_iter().filter(|l| l.sequence <= last) {
                match continuity.check(ledger.sequence) {
                    Ok(Step::Deliver) => out.push(ledger),
                    Ok(Step::Repeat) => {}
                    // As for a bad object: the next call, starting at the gap, reports it.
                    Err(_) if !out.is_empty() => return Ok(out),
                    Err(gap) => {
                        return Err(SourceError::Object {
                            key,
                            message: gap.to_string(),
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records every ledger of the undecodable object at `start` (within `from..=last`) as
    /// a dead letter and returns their markers, so the stream stays gap-free and the
    /// processor knows they were set aside, not lost. When a letter cannot be recorded the
    /// object's error stands: nothing is dropped unrecorded.
    async fn set_aside(
        &self,
        letters: &DeadLetters,
        start: u32,
        from: u32,
        last: u32,
        error: &SourceError,
        bytes: &[u8],
    ) -> Result<Vec<RawLedger>, SourceError> {
        let end = start
            .saturating_add(self.manifest.ledgers_per_batch.max(1) - 1)
            .min(last);
        let mut markers = Vec::new();
        for sequence in start.max(from)..=end {
            let reason = format!("ledger {sequence}: {error}");
            if let Err(e) = letters.report(sequence, &reason, bytes).await {
                return Err(SourceError::Unreadable {
                    seq: sequence,
                    message: format!("{error}; {e}"),
                });
            }
            tracing::warn!(ledger = sequence, error = %error, "ledger set aside as a dead letter");
            markers.push(dead_letter_marker(sequence));
        }
        Ok(markers)
    }

    /// The ledgers of the object starting at `start`, or `None` when it does not exist yet.
    /// The ledgers come with the object's name, for errors.
    async fn read_object(&self, start: u32) -> Result<Option<Object>, SourceError> {
        let key = self.manifest.object_key(start);
        let path = child(&self.root, &key);
        let Some(compressed) = get_with_retry(self.store.as_ref(), &path).await? else {
            return Ok(None);
        };
        let display = format!("{}/{key}", self.url.trim_end_matches('/'));
        let manifest = self.manifest.clone();
        let name = display.clone();
        let ledgers = tokio::task::spawn_blocking(move || {
            decode_batch(&manifest, &display, &compressed).map_err(|e| (e, compressed))
        })
        .await
        .map_err(|e| SourceError::Object {
            key: key.clone(),
            message: format!("decode task failed: {e}"),
        })?;
        Ok(Some(Object {
            key: name,
            start,
            ledgers,
        }))
    }
}

/// The stand-in for a ledger set aside as a dead letter: its sequence and no XDR (a real
/// ledger's XDR is never empty).
pub fn dead_letter_marker(sequence: u32) -> RawLedger {
    RawLedger {
        sequence,
        ledger_close_meta_xdr: Default::default(),
    }
}

/// Whether `ledger` is a [`dead_letter_marker`].
pub fn is_dead_letter(ledger: &RawLedger) -> bool {
    ledger.ledger_close_meta_xdr.is_empty()
}

/// Unpacks one zstd `LedgerCloseMetaBatch` into raw ledgers, inflating it no further than
/// the lake's manifest allows. Each ledger's sequence is read from its own header, not
/// inferred from its place in the object, so a misplaced object cannot relabel ledgers.
pub fn decode_batch(
    manifest: &DataLakeConfig,
    key: &str,
    compressed: &[u8],
) -> Result<Vec<RawLedger>, SourceError> {
    let obj_err = |message: String| SourceError::Object {
        key: key.to_string(),
        message,
    };
    let xdr = manifest
        .decompress_object(std::path::Path::new(key), compressed)
        .map_err(|e| obj_err(e.to_string()))?;
    let batch = stellar_ledgers::decode_batch_object(std::path::Path::new(key), &xdr)
        .map_err(|e| obj_err(e.to_string()))?;
    let mut out = Vec::with_capacity(batch.ledger_close_metas.len());
    for lcm in batch.ledger_close_metas.iter() {
        let sequence = stellar_ledgers::ledger_sequence(lcm);
        let bytes = lcm
            .to_xdr(Limits::none())
            .map_err(|e| obj_err(format!("ledger {sequence} does not re-encode: {e}")))?;
        out.push(RawLedger {
            sequence,
            ledger_close_meta_xdr: bytes.into(),
        });
    }
    Ok(out)
}

fn child(root: &ObjectPath, key: &str) -> ObjectPath {
    let mut p = root.clone();
    for part in key.split('/').filter(|s| !s.is_empty()) {
        p = p.clone().join(part);
    }
    p
}

async fn get_with_retry(
    store: &dyn ObjectStore,
    path: &ObjectPath,
) -> Result<Option<Vec<u8>>, SourceError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let result = match store.get_opts(path, GetOptions::default()).await {
            Ok(r) => r.bytes().await.map(|b| b.to_vec()),
            Err(e) => Err(e),
        };
        match result {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(object = %path, attempt, error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => {
                return Err(SourceError::Object {
                    key: path.to_string(),
                    message: format!("{e} (after {ATTEMPTS} attempts)"),
                })
            }
        }
    }
}

/// The object store and root prefix for a lake URL. Cloud buckets are read anonymously
/// unless the usual credentials variables are set; `endpoint` (else the stores' own endpoint
/// variables) points them at another service.
fn store_for(
    url: &str,
    endpoint: Option<&str>,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    let endpoint = endpoint.map(str::trim).filter(|e| !e.is_empty());
    if let Some(e) = endpoint {
        if !e.starts_with("http://") && !e.starts_with("https://") {
            return Err(format!(
                "DATALAKE_ENDPOINT {e:?} must be an http:// or https:// URL"
            ));
        }
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = split_bucket(rest)?;
        let anonymous = std::env::var_os("AWS_ACCESS_KEY_ID").is_none();
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_skip_signature(anonymous);
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        if let Some(e) = endpoint {
            b = b.with_endpoint(e);
        }
        let configured = endpoint
            .map(str::to_string)
            .or_else(|| b.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if configured.is_some_and(|e| e.starts_with("http://")) {
            b = b.with_allow_http(true);
        }
        let store = b.build().map_err(|e| format!("S3 setup: {e}"))?;
        return Ok((Arc::new(store), ObjectPath::from(prefix)));
    }
    if let Some(rest) = url.strip_prefix("gs://") {
        let (bucket, prefix) = split_bucket(rest)?;
        let anonymous = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none()
            && std::env::var_os("GOOGLE_SERVICE_ACCOUNT").is_none();
        let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_skip_signature(anonymous);
        // The GCS client allows plain HTTP already (the real service's URL is HTTPS).
        if let Some(e) = endpoint {
            b = b.with_base_url(e);
        }
        let store = b.build().map_err(|e| format!("GCS setup: {e}"))?;
        return Ok((Arc::new(store), ObjectPath::from(prefix)));
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    if url.contains("://") && !url.starts_with("file://") {
        return Err("unsupported scheme: use a local path, file://, s3:// or gs://".into());
    }
    let path = std::path::Path::new(local);
    if !path.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let store = object_store::local::LocalFileSystem::new_with_prefix(path)
        .map_err(|e| format!("local lake: {e}"))?;
    Ok((Arc::new(store), ObjectPath::default()))
}

fn split_bucket(rest: &str) -> Result<(&str, &str), String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("the URL names no bucket".into());
    }
    Ok((bucket, prefix.trim_end_matches('/')))
}
