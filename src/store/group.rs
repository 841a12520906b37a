//! Group commit for the hot paths. Concurrent callers (API requests accepting messages,
//! workers claiming deliveries and recording outcomes) hand their write to a few flusher
//! tasks; each flusher takes whatever has queued up (up to `MAX_BATCH`) and writes it in one
//! transaction with multi-row statements, then answers every caller. Under light load a batch
//! is one item and nothing waits; under heavy load round trips and commits are shared.
//!
//! A batch that fails is retried item by item, so one bad write fails only its own caller.
//! Every caller still gets its answer only after its write is committed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    AcceptItem, AcceptOutcome, Claimed, ConsentLedger, ConsentLookup, DeliveryUpdate, Hl7Record,
    Hl7Row, InDoubt, NewFaxInbound, Result, Store, StoreError, now_ms,
};

const MAX_BATCH: usize = 128;

/// Whether an accept batch's callers wait for its job push ([`AfterAccept`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushes {
    /// Answered once committed; the push runs on a task of its own. For the daemon, whose
    /// sweeper and start-up recovery make good a push that fails or dies with the process.
    Detached,
    /// Answered after the push. For one-shot commands (`switchboard send`), which exit once
    /// answered: a detached push would die with them, and the message would wait for the
    /// sweeper's stale-mark pass.
    Awaited,
}

/// Job pushes of committed accept batches running at once ([`AfterAccept`]); an accept
/// flusher with this many still running waits for one before answering its next batch.
const PUSHES_IN_FLIGHT: usize = 4;

/// How long the HL7 flusher waits, at most, for the connections the last batch answered to
/// send their next messages (only while fewer have arrived than that batch held). Each MLLP
/// connection has one message in flight, so without it a steady load splits into a batch of
/// one and a batch of the rest.
const HL7_LINGER: Duration = Duration::from_micros(500);

type Reply<T> = oneshot::Sender<Result<T>>;

/// A queue of writes of one kind and the flushers that commit them.
struct Batcher<Req, Resp> {
    tx: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
{
    fn spawn<F, Fut>(flushers: usize, linger: Option<Duration>, flush: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>>> + Send,
    {
        let (tx, rx) = mpsc::channel::<(Req, Reply<Resp>)>(MAX_BATCH * 8);
        let rx = Arc::new(Mutex::new(rx));
        let flush = Arc::new(flush);
        for _ in 0..flushers.max(1) {
            let (rx, flush) = (rx.clone(), flush.clone());
            tokio::spawn(async move {
                // How many the last batch held: under a steady load, about how many callers
                // are waiting for their answer to send the next write.
                let mut last_len = 0;
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        batch.push(first);
                        let started = Instant::now();
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(item) => batch.push(item),
                                // Lingering (when asked for): the last batch's callers, just
                                // answered, are about to send their next writes. Committing the
                                // first alone would leave the rest waiting out that commit,
                                // and the batches alternating between one and all but one.
                                Err(_) => match linger {
                                    Some(linger)
                                        if batch.len() < last_len && started.elapsed() < linger =>
                                    {
                                        tokio::task::yield_now().await;
                                    }
                                    _ => break,
                                },
                            }
                        }
                    }
                    last_len = batch.len();
                    let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) =
                        batch.into_iter().unzip();
                    let single = requests.len() == 1;
                    match flush(requests.clone()).await {
                        Ok(results) if results.len() == replies.len() => {
                            for (result, reply) in results.into_iter().zip(replies) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Ok(_) => {
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Closed));
                            }
                        }
                        Err(e) if single => {
                            if let Some(reply) = replies.into_iter().next() {
                                let _ = reply.send(Err(e));
                            }
                        }
                        Err(_) => {
                            // Isolate the failing write: retry each on its own.
                            for (request, reply) in requests.into_iter().zip(replies) {
                                let result = flush(vec![request])
                                    .await
                                    .and_then(|mut v| v.pop().ok_or(StoreError::Closed));
                                let _ = reply.send(result);
                            }
                        }
                    }
                }
            });
        }
        Self { tx }
    }

    async fn call(&self, request: Req) -> Result<Resp> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((request, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// What happens right after a batch of accepted messages is committed: the queue pushes one
/// job per channel for the whole batch, on a task of its own as the callers are answered
/// (at most [`PUSHES_IN_FLIGHT`] at once), or before they are ([`Pushes`]).
pub trait AfterAccept: Send + Sync + 'static {
    /// `(channel, delivery id)` of every delivery just committed.
    fn enqueue(&self, deliveries: Vec<(String, String)>) -> BoxFuture<'static, ()>;
}

/// The group-commit writers of one daemon. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    accept: Batcher<AcceptItem, AcceptOutcome>,
    claim: Batcher<(String, i64, Arc<InDoubt>), Option<Claimed>>,
    update: Batcher<(String, DeliveryUpdate), bool>,
    fax: Batcher<NewFaxInbound, (String, bool)>,
    hl7: Batcher<Hl7Record, Option<Hl7Row>>,
    consents: Batcher<ConsentLookup, ConsentLedger>,
    /// What enqueues deliveries once committed (none in tools that only write).
    after_accept: Option<Arc<dyn AfterAccept>>,
}

impl GroupCommit {
    /// Spawns the flushers (one per kind on SQLite, whose writes serialize anyway; two on
    /// PostgreSQL; `fax_writers` for received faxes when not 0). Needs a tokio runtime.
    pub fn start(
        store: &Store,
        after_accept: Option<Arc<dyn AfterAccept>>,
        pushes: Pushes,
        fax_writers: usize,
    ) -> Self {
        let flushers = store.db.flushers();
        // Each kind's writers keep their PostgreSQL connections between batches.
        let held = || {
            let held = Arc::new(super::HeldConnections::default());
            if store.db.is_postgres() {
                super::HeldConnections::keep_swept(&held);
            }
            held
        };
        let s = store.clone();
        let hook = after_accept.clone();
        let accept_held = held();
        let slots = Arc::new(tokio::sync::Semaphore::new(PUSHES_IN_FLIGHT));
        let accept = Batcher::spawn(flushers, None, move |items: Vec<AcceptItem>| {
            let (s, after_accept, held) = (s.clone(), hook.clone(), accept_held.clone());
            let slots = slots.clone();
            async move {
                let outcomes = s.messages().accept_many_on(Some(&held), &items).await?;
                if let Some(hook) = after_accept {
                    let created: Vec<(String, String)> = items
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, outcome)| **outcome == AcceptOutcome::Created)
                        .flat_map(|(item, _)| {
                            item.deliveries
                                .iter()
                                .map(|d| (d.channel.clone(), d.id.clone()))
                        })
                        .collect();
                    // The callers are answered now, not after the push (a second commit):
                    // the deliveries are durable and marked enqueued, and a push that fails
                    // or dies with the process is made good by the sweeper (stale mark) or
                    // the start-up recovery (every queued delivery). The flusher waits only
                    // when PUSHES_IN_FLIGHT pushes are still running.
                    match pushes {
                        _ if created.is_empty() => {}
                        Pushes::Detached => {
                            let slot = slots.acquire_owned().await.ok();
                            let push = hook.enqueue(created);
                            tokio::spawn(async move {
                                push.await;
                                drop(slot);
                            });
                        }
                        Pushes::Awaited => hook.enqueue(created).await,
                    }
                }
                Ok(outcomes)
            }
        });
        let s = store.clone();
        let claim_held = held();
        let claim = Batcher::spawn(
            flushers,
            None,
            move |requests: Vec<(String, i64, Arc<InDoubt>)>| {
                let (s, held) = (s.clone(), claim_held.clone());
                async move {
                    let now = now_ms();
                    let lease_ms = requests
                        .iter()
                        .map(|(_, lease, _)| *lease)
                        .max()
                        .unwrap_or(0);
                    // One daemon's workers share one `InDoubt` (from its configuration).
                    let in_doubt = requests
                        .first()
                        .map(|(_, _, in_doubt)| in_doubt.clone())
                        .unwrap_or_default();
                    let ids: Vec<String> = requests.iter().map(|(id, _, _)| id.clone()).collect();
                    let mut claimed = s
                        .deliveries()
                        .claim_many_on(Some(&held), &ids, now, now + lease_ms, &in_doubt)
                        .await?;
                    Ok(ids
                        .iter()
                        .map(|id| {
                            claimed
                                .iter()
                                .position(|c| &c.delivery.id == id)
                                .map(|i| claimed.swap_remove(i))
                        })
                        .collect())
                }
            },
        );
        let s = store.clone();
        let update_held = held();
        let update = Batcher::spawn(
            flushers,
            None,
            move |updates: Vec<(String, DeliveryUpdate)>| {
                let (s, held) = (s.clone(), update_held.clone());
                async move { s.deliveries().update_many_on(Some(&held), &updates).await }
            },
        );
        let s = store.clone();
        let fax_flushers = if fax_writers == 0 {
            flushers
        } else {
            fax_writers
        };
        let fax_held = held();
        let fax = Batcher::spawn(fax_flushers, None, move |faxes: Vec<NewFaxInbound>| {
            let (s, held) = (s.clone(), fax_held.clone());
            async move { s.received_faxes().record_many_on(Some(&held), &faxes).await }
        });
        // Concurrent connections' HL7 messages share a transaction and a commit. On
        // PostgreSQL two batches may commit side by side: each statement of a batch takes its
        // row locks in key order, tables always in the same order, so two batches touching the
        // same patients wait for each other instead of deadlocking (and if one ever did fail,
        // its messages would be recorded one by one, as any failed batch is).
        let s = store.clone();
        let hl7_held = held();
        let hl7 = Batcher::spawn(
            flushers,
            Some(HL7_LINGER),
            move |records: Vec<Hl7Record>| {
                let (s, held) = (s.clone(), hl7_held.clone());
                async move { s.hl7().record_many_on(Some(&held), &records).await }
            },
        );
        // Not a write: concurrent send attempts' consent lookups share one read, made after
        // each of them asked (so an opt-out committed before an attempt asked is seen).
        let s = store.clone();
        let consents = Batcher::spawn(flushers, None, move |lookups: Vec<ConsentLookup>| {
            let s = s.clone();
            async move { s.consents().ledgers(&lookups).await }
        });
        Self {
            accept,
            claim,
            update,
            fax,
            hl7,
            consents,
            after_accept,
        }
    }

    /// Enqueues `(channel, delivery id)` of deliveries committed outside [`Self::accept`] (a
    /// dead letter retried), as accepted ones are. Without a hook the sweeper picks them up.
    pub async fn enqueue(&self, deliveries: Vec<(String, String)>) {
        if let Some(hook) = &self.after_accept
            && !deliveries.is_empty()
        {
            hook.enqueue(deliveries).await;
        }
    }

    /// [`Messages::accept_many`](super::Messages::accept_many), grouped.
    pub async fn accept(&self, item: AcceptItem) -> Result<AcceptOutcome> {
        self.accept.call(item).await
    }

    /// [`Deliveries::claim_many`](super::Deliveries::claim_many) for one delivery with a lease of
    /// `lease_ms` (and `in_doubt`'s hold on its channels), grouped.
    pub async fn claim(
        &self,
        delivery_id: &str,
        lease_ms: i64,
        in_doubt: &Arc<InDoubt>,
    ) -> Result<Option<Claimed>> {
        self.claim
            .call((delivery_id.to_string(), lease_ms, in_doubt.clone()))
            .await
    }

    /// [`ReceivedFaxes::record_many`](super::ReceivedFaxes::record_many) for one fax webhook,
    /// grouped: concurrent webhooks share a commit.
    pub async fn record_fax(&self, fax: NewFaxInbound) -> Result<(String, bool)> {
        self.fax.call(fax).await
    }

    /// [`Hl7::record_many`](super::Hl7::record_many) for one HL7 message, grouped: the
    /// messages of concurrent MLLP connections share a commit, and each connection's ACK
    /// still waits for its own message's.
    pub async fn record_hl7(&self, record: Hl7Record) -> Result<Option<Hl7Row>> {
        self.hl7.call(record).await
    }

    /// [`Consents::entries`](super::Consents::entries) for one disclosure, grouped: concurrent
    /// lookups share one statement ([`Consents::ledgers`](super::Consents::ledgers)).
    pub async fn consent_ledger(&self, lookup: ConsentLookup) -> Result<ConsentLedger> {
        self.consents.call(lookup).await
    }

    /// [`Deliveries::update_many`](super::Deliveries::update_many) for one report, grouped.
    pub async fn update(&self, delivery_id: &str, update: DeliveryUpdate) -> Result<bool> {
        self.update.call((delivery_id.to_string(), update)).await
    }
}
