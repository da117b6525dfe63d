use super::*;
use crate::registry::{NewVersion, Stage, Tag};

fn hook(store: &Store, name: &str, events: &[Event]) -> Webhook {
    store
        .create_webhook(&NewWebhook {
            name: name.into(),
            url: "https://hooks.example/x".into(),
            events: events.to_vec(),
            secret: Some("s".into()),
            ..Default::default()
        })
        .unwrap()
}

fn version(store: &Store, name: &str) -> u64 {
    store
        .create_model_version(&NewVersion { name: name.into(), source: "s3://b/m".into(), ..Default::default() })
        .unwrap()
        .version
}

fn bodies(claimed: &[Claimed]) -> Vec<Value> {
    claimed.iter().map(|c| serde_json::from_str(&c.body).unwrap()).collect()
}

#[test]
fn writes_queue_mlflow_payloads_for_subscribed_active_hooks_only() {
    let s = Store::open_in_memory().unwrap();
    let all = hook(&s, "all", MLFLOW_EVENTS);
    let tags_only = hook(&s, "tags", &[ev("model_version_tag", "set")]);
    s.create_registered_model("m", "desc", &[Tag { key: "k".into(), value: "v".into() }]).unwrap();
    let v = version(&s, "m");
    s.set_model_version_tag("m", v, "a", "b").unwrap();
    s.set_alias("m", "champ", v).unwrap();
    s.transition_stage("m", v, Stage::Production, false).unwrap();
    s.set_registered_model_tag("m", "x", "y").unwrap(); // no MLflow event for a model's tag
    let claimed = s.claim_deliveries(100, 60_000).unwrap();
    let mut seen: Vec<(String, String)> = claimed.iter().map(|c| (c.webhook_id.clone(), c.event.clone())).collect();
    seen.sort();
    let mut want = vec![
        (all.webhook_id.clone(), "registered_model.created".to_string()),
        (all.webhook_id.clone(), "model_version.created".to_string()),
        (all.webhook_id.clone(), "model_version_tag.set".to_string()),
        (all.webhook_id.clone(), "model_version_alias.created".to_string()),
        (tags_only.webhook_id.clone(), "model_version_tag.set".to_string()),
    ];
    want.sort();
    assert_eq!(seen, want);
    let b = bodies(&claimed);
    let created = b.iter().find(|b| b["entity"] == "model_version").unwrap();
    assert_eq!(
        created["data"],
        json!({"name": "m", "version": "1", "source": "s3://b/m", "run_id": null, "tags": {}, "description": null})
    );
    let model = b.iter().find(|b| b["entity"] == "registered_model").unwrap();
    assert_eq!(model["data"], json!({"name": "m", "tags": {"k": "v"}, "description": "desc"}));
    assert!(model["timestamp"].as_str().unwrap().ends_with("+00:00"));
    assert!(claimed.iter().all(|c| c.attempt == 1));
}

#[test]
fn a_failed_write_queues_nothing_and_disabled_or_deleted_hooks_get_nothing() {
    let s = Store::open_in_memory().unwrap();
    let h = hook(&s, "h", &[ev("registered_model", "created"), ev("model_version_alias", "deleted")]);
    s.create_registered_model("m", "", &[]).unwrap();
    assert!(s.create_registered_model("m", "", &[]).is_err());
    assert!(s.delete_alias("m", "nope").is_err());
    assert_eq!(s.count_deliveries("PENDING").unwrap(), 1);
    s.update_webhook(&h.webhook_id, &WebhookUpdate { status: Some("DISABLED".into()), ..Default::default() }).unwrap();
    s.create_registered_model("m2", "", &[]).unwrap();
    assert_eq!(s.count_deliveries("PENDING").unwrap(), 1);
    s.delete_webhook(&h.webhook_id).unwrap();
    assert_eq!(s.count_deliveries("PENDING").unwrap(), 0, "a deleted hook's pending deliveries go with it");
    assert!(matches!(s.get_webhook(&h.webhook_id), Err(RegistryError::NotFound(_))));
}

#[test]
fn prompts_get_the_prompt_events() {
    let s = Store::open_in_memory().unwrap();
    hook(&s, "p", MLFLOW_EVENTS);
    let prompt_tags = [
        Tag { key: crate::registry::IS_PROMPT_TAG_KEY.into(), value: "true".into() },
        Tag { key: "team".into(), value: "a".into() },
    ];
    s.create_registered_model("p", "", &prompt_tags).unwrap();
    let v = version(&s, "p");
    s.set_registered_model_tag("p", "owner", "me").unwrap();
    s.set_alias("p", "prod", v).unwrap();
    let mut events: Vec<String> = s.claim_deliveries(100, 60_000).unwrap().into_iter().map(|c| c.event).collect();
    events.sort();
    assert_eq!(events, ["prompt.created", "prompt_alias.created", "prompt_tag.set", "prompt_version.created"]);
}

#[test]
fn claims_are_leased_once_and_retries_wait_their_turn() {
    let s = Store::open_in_memory().unwrap();
    hook(&s, "h", &[ev("registered_model", "created")]);
    hook(&s, "h2", &[ev("registered_model", "created")]);
    s.create_registered_model("m", "", &[]).unwrap();
    let first = s.claim_deliveries(1, 60_000).unwrap();
    let second = s.claim_deliveries(10, 60_000).unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0].id, second[0].id);
    assert!(s.claim_deliveries(10, 60_000).unwrap().is_empty(), "leased rows are not handed out again");
    // A retry due later is not claimed before then; a lease that ran out is.
    s.reschedule_delivery(first[0].id, Some(now_ms() + 60_000), "503").unwrap();
    assert!(s.claim_deliveries(10, 60_000).unwrap().is_empty());
    s.reschedule_delivery(first[0].id, Some(now_ms() - 1), "503").unwrap();
    let again = s.claim_deliveries(10, 60_000).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].delivery_id.as_str(), again[0].attempt), (first[0].delivery_id.as_str(), 2));
    s.reschedule_delivery(again[0].id, None, "gave up").unwrap();
    assert_eq!(s.count_deliveries("FAILED").unwrap(), 1);
    assert_eq!(s.prune_failed_deliveries(60_000).unwrap(), 0, "a recent failure is kept");
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(s.prune_failed_deliveries(1).unwrap(), 1);
    assert_eq!(s.count_deliveries("FAILED").unwrap(), 0);
    s.finish_delivery(second[0].id).unwrap();
    assert_eq!(s.count_deliveries("PENDING").unwrap(), 0);
    // An expired lease (a server that died mid-delivery) is taken over.
    s.create_registered_model("m2", "", &[]).unwrap();
    assert_eq!(s.claim_deliveries(10, -1).unwrap().len(), 2);
    assert_eq!(s.claim_deliveries(10, 60_000).unwrap().len(), 2);
}

#[test]
fn hooks_list_in_pages_newest_first_and_keep_extensions_apart() {
    let s = Store::open_in_memory().unwrap();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let h = hook(&s, &format!("h{i}"), &[ev("model_version", "created"), STAGE_TRANSITIONED]);
            std::thread::sleep(std::time::Duration::from_millis(2));
            h.webhook_id
        })
        .collect();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..5 {
        let page = s.list_webhooks(2, token.as_deref()).unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|h| h.webhook_id.clone()));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let json = serde_json::to_value(s.get_webhook(&ids[0]).unwrap()).unwrap();
    assert_eq!(json["events"], json!([{"entity": "MODEL_VERSION", "action": "CREATED"}]));
    assert_eq!(json["regserve_extension_events"], json!(["model_version.stage_transitioned"]));
    assert!(json.get("secret").is_none());
    assert!(s.list_webhooks(2, Some("garbage")).is_err());
}

#[test]
fn events_and_names_are_checked_as_mlflow_checks_them() {
    assert_eq!(
        Event::from_request(&json!({"entity": "MODEL_VERSION", "action": "CREATED"})).unwrap(),
        ev("model_version", "created")
    );
    assert_eq!(Event::from_request(&json!({"entity": 4, "action": 3})).unwrap(), ev("model_version_alias", "deleted"));
    let e = Event::from_request(&json!({"entity": "MODEL_VERSION", "action": "SET"})).unwrap_err();
    assert_eq!(e.to_string(), "Invalid action 'set' for entity 'model_version'. Valid actions are: [\"created\"]");
    assert!(Event::from_request(&json!({"entity": "MODEL_VERSION", "action": "STAGE_TRANSITIONED"})).is_err());
    assert!(validate_name("a.b-c_1").is_ok());
    for bad in ["", "-a", "a-", "a b", &"x".repeat(64)] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn concurrent_claimers_get_each_delivery_once() {
    // Several servers on one database: every row goes to exactly one of them.
    let s = std::sync::Arc::new(Store::open_in_memory().unwrap());
    hook(&s, "h", &[ev("registered_model", "created")]);
    for i in 0..40 {
        s.create_registered_model(&format!("m{i}"), "", &[]).unwrap();
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..200 {
                    let batch = s.claim_deliveries(3, 60_000).unwrap();
                    if batch.is_empty() && s.count_deliveries("PENDING").unwrap() as usize == 0 {
                        break;
                    }
                    for c in batch {
                        got.push(c.delivery_id.clone());
                        s.finish_delivery(c.id).unwrap();
                    }
                }
                got
            })
        })
        .collect();
    let mut all: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (40, 40));
}

#[test]
fn a_version_waiting_for_its_test_load_is_announced_once_it_is_ready() {
    use crate::registry::VersionStatus;
    let s = Store::open_in_memory().unwrap();
    hook(&s, "h", &[ev("model_version", "created")]);
    s.create_registered_model("m", "", &[]).unwrap();
    let mv = s
        .create_model_version(&NewVersion {
            name: "m".into(),
            source: "s3://b/m".into(),
            tags: vec![Tag { key: "k".into(), value: "v".into() }],
            status: Some(VersionStatus::PendingRegistration),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(s.count_deliveries("PENDING").unwrap(), 0, "nothing while the test load runs");
    s.set_version_status("m", mv.version, VersionStatus::PendingRegistration, "again").unwrap();
    assert_eq!(s.count_deliveries("PENDING").unwrap(), 0);
    s.set_version_status("m", mv.version, VersionStatus::Ready, "").unwrap();
    let claimed = s.claim_deliveries(10, 60_000).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        bodies(&claimed)[0]["data"],
        json!({"name": "m", "version": "1", "source": "s3://b/m", "run_id": null, "tags": {"k": "v"}, "description": null})
    );
    s.set_version_status("m", mv.version, VersionStatus::Ready, "").unwrap();
    assert_eq!(s.claim_deliveries(10, 60_000).unwrap().len(), 0, "announced once");
}
