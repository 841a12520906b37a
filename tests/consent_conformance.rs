//! The consent decision is made once, in Rust (`domain::consent::decide`); the store's SQL
//! only narrows which ledger entries are read. This test proves the narrowing never changes a
//! decision: for every consent situation (one entry of every shape, and every ordered pair of
//! the shapes where "newest wins" matters) and every question (channel, purpose, patient or
//! none, Part 2 or not), the decision over the entries each loader returns — one disclosure's
//! (`Gate::facts`: `Store::consent_entries` + `Store::part2_consents`) and a batch's
//! (`Store::consent_ledger` + `Store::part2_consents`) and concurrent send attempts' grouped
//! lookups (`Consents::ledgers`, next to other addresses' and patients') — equals the decision over the
//! organization's whole ledger, and every entry the rule says covers the question was loaded.
//! On SQLite and PostgreSQL, through the real store and migrations.

mod common;

use common::{Backend, TestDb};
use futures::StreamExt;
use switchboard::disclosure::{self, Disclosure, Facts, Gate, Refused};
use switchboard::domain::consent::{
    self, ConsentEntry, ConsentLedger, Part2Consents, Question, Verdict,
};
use switchboard::domain::{Address, Channel};
use switchboard::store::{ConsentLookup, PatientInput, Store, now_ms};

const NUMBER: &str = "+14155552671";
const OTHER_NUMBER: &str = "+14155550000";
const EMAIL: &str = "jane@example.org";
const DAY: i64 = 86_400_000;

/// One ledger entry to write; `patient` is "A", "B" or "" (none).
#[derive(Debug, Clone, Copy)]
struct Shape {
    patient: &'static str,
    channel: &'static str,
    purpose: &'static str,
    recipient: &'static str,
    status: &'static str,
    /// Days from now it expires (`None`: never).
    expires_in_days: Option<i64>,
}

fn single_entry_shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    for patient in ["A", "B", ""] {
        for channel in ["sms", "email", "*"] {
            for purpose in ["reminders", "message", "*", "part2"] {
                for recipient in [NUMBER, OTHER_NUMBER, EMAIL, "*"] {
                    for status in ["granted", "revoked"] {
                        for expires_in_days in [None, Some(-1), Some(1)] {
                            out.push(Shape {
                                patient,
                                channel,
                                purpose,
                                recipient,
                                status,
                                expires_in_days,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Shapes of patient A's entries on SMS where the order of two of them decides.
fn ordering_shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    // (Which channels cover is the single-entry situations' business.)
    for purpose in ["*", "reminders", "part2"] {
        for channel in ["sms"] {
            for recipient in [NUMBER, "*"] {
                for status in ["granted", "revoked"] {
                    out.push(Shape {
                        patient: "A",
                        channel,
                        purpose,
                        recipient,
                        status,
                        expires_in_days: if purpose == "part2" && status == "granted" {
                            Some(-1)
                        } else {
                            None
                        },
                    });
                    if purpose == "part2" && status == "granted" {
                        out.push(Shape {
                            expires_in_days: None,
                            ..*out.last().expect("pushed")
                        });
                    }
                }
            }
        }
    }
    out
}

struct Situation {
    organization_id: String,
    patient_a: String,
    patient_b: String,
    entries: Vec<Shape>,
}

async fn write_situation(store: &Store, n: usize, entries: &[Shape], now: i64) -> Situation {
    let org = store
        .organizations()
        .ensure(&format!("org{n}"), "Org")
        .await
        .expect("organization");
    let mut ids = std::collections::HashMap::new();
    for name in ["A", "B"] {
        let (row, _) = store
            .patients()
            .upsert(
                &org.id,
                &PatientInput {
                    external_id: format!("p{name}"),
                    ..PatientInput::default()
                },
            )
            .await
            .expect("patient");
        ids.insert(name, row.id);
    }
    for (i, shape) in entries.iter().enumerate() {
        let patient = ids.get(shape.patient).cloned();
        // Older entries first; ids sort the other way, so time, not id, must order them.
        let id = format!("cns_{n}_{}", 9 - i);
        let recorded_at = now - DAY + i as i64 * 1000;
        let expires_at = shape.expires_in_days.map(|d| now + d * DAY);
        switchboard::on_db!(store.db(), |pool| sqlx::query(
            "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient, status, source, recorded_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'test', $8, $9)",
        )
        .bind(&id).bind(&org.id).bind(&patient).bind(shape.channel).bind(shape.purpose)
        .bind(shape.recipient).bind(shape.status).bind(recorded_at).bind(expires_at)
        .execute(pool).await.map(|_| ()))
        .expect("insert consent");
    }
    Situation {
        organization_id: org.id,
        patient_a: ids["A"].clone(),
        patient_b: ids["B"].clone(),
        entries: entries.to_vec(),
    }
}

fn verdict(decision: Result<disclosure::Permit, disclosure::Refusal>) -> Verdict {
    match decision {
        Ok(_) => Verdict::Permitted,
        Err(refusal) => match refusal.reason {
            Refused::Part2ConsentRequired => Verdict::Part2ConsentRequired,
            Refused::OptedOut { .. } => Verdict::OptedOut,
        },
    }
}

fn ids(entries: &[ConsentEntry]) -> std::collections::HashSet<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// Every question about a situation, decided three ways; returns how many were asked. The
/// loaders run once per (channel, purpose, patient), as a Part 2 disclosure would run them
/// (ledger and Part 2 consents); both the Part 2 and the ordinary question are decided on
/// what they returned.
async fn check(store: &Store, s: &Situation) -> usize {
    let all = store
        .consents()
        .all(&s.organization_id)
        .await
        .expect("ledger");
    assert_eq!(all.len(), s.entries.len());
    let everything = ConsentLedger::new(all.clone());
    let every_part2 = Part2Consents::new(all.clone());
    let gate = Gate::new(store.clone());
    let mut asked = 0;
    for channel in [Channel::Sms, Channel::Email] {
        let raw = if channel == Channel::Sms {
            "(415) 555-2671"
        } else {
            "Jane@Example.org"
        };
        let address = Address::canonical(channel, raw, "US");
        for purpose in [disclosure::REMINDER, disclosure::MESSAGE] {
            for patient in [Some(s.patient_a.as_str()), None] {
                let now = now_ms();
                let disclosure_of = |part2| Disclosure {
                    organization_id: &s.organization_id,
                    patient_id: patient,
                    channel,
                    address: &address,
                    purpose,
                    part2,
                };
                // One disclosure's loaders (the worker, notices, inbound answers)...
                let (one_ledger, one_part2) =
                    gate.facts(&disclosure_of(true)).await.expect("facts");
                // ... and a batch's (reminders, campaigns).
                let patients: Vec<&str> = patient.into_iter().collect();
                let batch_ledger = store
                    .consents()
                    .ledger(
                        &s.organization_id,
                        disclosure::ledger_purpose(purpose),
                        &[channel.as_str()],
                        &[address.as_str()],
                        &patients,
                    )
                    .await
                    .expect("batch ledger");
                let batch_part2 = store.consents().part2(&patients).await.expect("part 2");
                // ... and concurrent send attempts' lookups, grouped (the worker), asked next
                // to another address's and another patient's in the same group.
                let lookup = |recipient: &str, patient: Option<&str>| ConsentLookup {
                    organization_id: s.organization_id.clone(),
                    purpose: disclosure::ledger_purpose(purpose).to_string(),
                    channel: channel.as_str().to_string(),
                    recipient: recipient.to_string(),
                    patient_id: patient.map(str::to_string),
                };
                let other = Address::canonical(channel, OTHER_NUMBER, "US");
                let grouped_ledger = store
                    .consents()
                    .ledgers(&[
                        lookup(other.as_str(), None),
                        lookup(address.as_str(), patient),
                        lookup(other.as_str(), Some(s.patient_b.as_str())),
                    ])
                    .await
                    .expect("grouped ledgers")
                    .swap_remove(1);
                for part2 in [false, true] {
                    asked += 1;
                    let question = Question {
                        channel,
                        address: &address,
                        patient_id: patient,
                        purpose: disclosure::ledger_purpose(purpose),
                        part2,
                        exempt_from_opt_out: false,
                        now,
                    };
                    let expected = consent::decide(&question, &everything, &every_part2);
                    let d = disclosure_of(part2);
                    let context = format!("entries {:?}\nquestion {question:?}", s.entries);
                    for (path, ledger, part2s) in [
                        ("one disclosure's loaders", &one_ledger, &one_part2),
                        ("a batch's loaders", &batch_ledger, &batch_part2),
                        ("grouped lookups", &grouped_ledger, &one_part2),
                    ] {
                        let got = verdict(disclosure::decide(
                            &d,
                            &Facts {
                                ledger,
                                part2: part2s,
                                now,
                            },
                        ));
                        assert_eq!(got, expected, "{path}\n{context}");
                        let loaded = ids(ledger.entries());
                        for e in all.iter().filter(|e| consent::covers_opt_out(e, &question)) {
                            assert!(
                                loaded.contains(e.id.as_str()),
                                "{path} left out {e:?}\n{context}"
                            );
                        }
                        let loaded = ids(patient.map_or(&[][..], |p| part2s.of(p)));
                        for e in all.iter().filter(|e| consent::covers_part2(e, &question)) {
                            assert!(
                                loaded.contains(e.id.as_str()),
                                "{path} left out {e:?}\n{context}"
                            );
                        }
                    }
                }
            }
        }
    }
    asked
}

async fn store_for(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, 8, false).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn sql_and_rust_agree_on_every_situation(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let now = now_ms();
    let mut cases: Vec<Vec<Shape>> = single_entry_shapes().into_iter().map(|s| vec![s]).collect();
    let ordering = ordering_shapes();
    for older in &ordering {
        for newer in &ordering {
            cases.push(vec![*older, *newer]);
        }
    }
    let situations: Vec<Situation> = futures::stream::iter(
        cases
            .iter()
            .enumerate()
            .map(|(n, entries)| write_situation(&store, n, entries, now)),
    )
    .buffered(8)
    .collect()
    .await;
    let written = std::time::Instant::now();
    let asked: usize = futures::stream::iter(situations.iter().map(|s| check(&store, s)))
        .buffer_unordered(8)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum();
    let mut outcomes = std::collections::HashMap::new();
    for situation in &situations {
        let all = store
            .consents()
            .all(&situation.organization_id)
            .await
            .expect("ledger");
        let address = Address::canonical(Channel::Sms, NUMBER, "US");
        let q = Question {
            channel: Channel::Sms,
            address: &address,
            patient_id: Some(&situation.patient_a),
            purpose: "reminders",
            part2: true,
            exempt_from_opt_out: false,
            now: now_ms(),
        };
        let v = consent::decide(
            &q,
            &ConsentLedger::new(all.clone()),
            &Part2Consents::new(all),
        );
        *outcomes.entry(format!("{v:?}")).or_insert(0) += 1;
    }
    // The situations reach every verdict (the enumeration is not vacuous).
    for v in ["Permitted", "Part2ConsentRequired", "OptedOut"] {
        assert!(outcomes.get(v).is_some_and(|n| *n > 10), "{outcomes:?}");
    }
    assert!(asked > 10_000, "{asked} questions");
    eprintln!(
        "{} situations, {asked} questions, checked in {:?}",
        situations.len(),
        written.elapsed()
    );
    store.close().await;
}
both_databases!(agree, crate::sql_and_rust_agree_on_every_situation);

/// Entries written before the API recorded recipients canonically are rewritten once, so the
/// ledger's text comparison (SQL and Rust alike) finds them.
async fn legacy_recipients_are_made_canonical(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let now = now_ms();
    let legacy = [
        Shape {
            patient: "A",
            channel: "sms",
            purpose: "*",
            recipient: "(415) 555-2671",
            status: "revoked",
            expires_in_days: None,
        },
        Shape {
            patient: "A",
            channel: "email",
            purpose: "*",
            recipient: "<Jane@Example.ORG>",
            status: "revoked",
            expires_in_days: None,
        },
        Shape {
            patient: "",
            channel: "*",
            purpose: "*",
            recipient: "*",
            status: "revoked",
            expires_in_days: None,
        },
    ];
    let s = write_situation(&store, 1, &legacy, now).await;
    let sms = Address::canonical(Channel::Sms, NUMBER, "US");
    let refused = |address| {
        let gate = Gate::new(store.clone());
        let org = s.organization_id.clone();
        async move {
            let d = Disclosure {
                organization_id: &org,
                patient_id: None,
                channel: if address == NUMBER {
                    Channel::Sms
                } else {
                    Channel::Email
                },
                address: &Address::canonical_for("*", address, "US"),
                purpose: disclosure::MESSAGE,
                part2: false,
            };
            gate.decide(&d).await.expect("decide").is_err()
        }
    };
    // Before: the national form is not the address the gate compares.
    assert!(!refused(NUMBER).await);
    let fixed = store
        .consents()
        .canonicalize_recipients(|_, channel, recipient| {
            consent::canonical_recipient(channel, recipient, "US")
        })
        .await
        .expect("fix");
    assert_eq!(fixed, 2);
    let all = store
        .consents()
        .all(&s.organization_id)
        .await
        .expect("ledger");
    let recipients: Vec<&str> = all.iter().map(|e| e.recipient.as_str()).collect();
    assert!(recipients.contains(&sms.as_str()), "{recipients:?}");
    assert!(recipients.contains(&EMAIL), "{recipients:?}");
    assert!(recipients.contains(&"*"), "{recipients:?}");
    assert!(refused(NUMBER).await);
    assert!(refused(EMAIL).await);
    // Once per database.
    switchboard::on_db!(store.db(), |pool| sqlx::query(
        "UPDATE consents SET recipient = '(415) 555-2671' WHERE channel = 'sms'"
    )
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("reset");
    let again = store
        .consents()
        .canonicalize_recipients(|_, channel, recipient| {
            consent::canonical_recipient(channel, recipient, "US")
        })
        .await
        .expect("fix");
    assert_eq!(again, 0);
    store.close().await;
}
both_databases!(legacy, crate::legacy_recipients_are_made_canonical);

/// Grouped lookups of more addresses and patients than one statement lists
/// (`Consents::ledgers` chunks them): entries that only a later chunk names, an address's and
/// a patient's, are still in every lookup's ledger.
async fn grouped_lookups_beyond_one_chunk(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let now = now_ms();
    let s = write_situation(&store, 1, &[], now).await;
    let late_number = "+14155502400";
    for (id, patient, recipient) in [
        ("cns_address", None, late_number),
        ("cns_patient", Some(&s.patient_a), "*"),
    ] {
        switchboard::on_db!(store.db(), |pool| sqlx::query(
            "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient, status, source, recorded_at)
             VALUES ($1, $2, $3, 'sms', '*', $4, 'revoked', 'test', $5)",
        )
        .bind(id).bind(&s.organization_id).bind(patient).bind(recipient).bind(now - DAY)
        .execute(pool).await.map(|_| ()))
        .expect("insert consent");
    }
    let lookups: Vec<ConsentLookup> = (0..2_500)
        .map(|i| ConsentLookup {
            organization_id: s.organization_id.clone(),
            purpose: disclosure::ledger_purpose(disclosure::MESSAGE).to_string(),
            channel: "sms".to_string(),
            recipient: format!("+141555{i:05}"),
            patient_id: Some(if i == 2_200 {
                s.patient_a.clone()
            } else {
                format!("pat_{i}")
            }),
        })
        .collect();
    let ledgers = store.consents().ledgers(&lookups).await.expect("ledgers");
    assert_eq!(ledgers.len(), lookups.len());
    for n in [0, 2_200, 2_400, 2_499] {
        let loaded = ids(ledgers[n].entries());
        assert!(
            loaded.contains("cns_address") && loaded.contains("cns_patient"),
            "lookup {n} loaded {loaded:?}"
        );
    }
    store.close().await;
}
both_databases!(beyond_one_chunk, crate::grouped_lookups_beyond_one_chunk);
