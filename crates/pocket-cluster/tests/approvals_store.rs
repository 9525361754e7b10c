//! Durable approval requests ([`ApprovalStore`]) against every store: memory, SQLite (a
//! temporary file) and, when `POCKET_TEST_POSTGRES_URL` is set, PostgreSQL (a fresh schema
//! per case).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use pocket_agent::Approval;
use pocket_cluster::store::{
    ApprovalStore, Decided, NewApproval, StoreError, StoreOptions, TaskId, approval_id,
};
use serde_json::json;
use support::Backend;

fn ask(task: &str, call: &str) -> NewApproval {
    NewApproval {
        task_id: TaskId(task.into()),
        agent: "ops".into(),
        call_id: call.into(),
        tool: "shell".into(),
        risk: "dangerous".into(),
        arguments: json!({"command": "rm -rf /tmp/x", "nul": "a\u{0}b"}),
    }
}

fn approvals(h: &support::Harness) -> &dyn ApprovalStore {
    h.store.approvals().expect("every store keeps approvals")
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backend::Memory).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                // Skipped (and said so once) without POCKET_TEST_POSTGRES_URL.
                if let Some(backend) = super::support::postgres() {
                    super::$case(backend).await;
                }
            })*
        }
    };
}

cases!(
    asking_again_returns_the_same_request_until_it_is_answered_once,
    deny_and_edit_keep_their_reason_and_arguments,
    pending_lists_skip_answered_requests_and_finished_tasks,
    a_reopened_store_still_has_the_request,
    bad_requests_and_unknown_ids,
    racing_answers_record_exactly_one,
);

async fn asking_again_returns_the_same_request_until_it_is_answered_once(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let store = approvals(&h);
    let first = store.request_approval(&ask("t1", "call-1")).await.unwrap();
    assert_eq!(first.id, approval_id(&TaskId("t1".into()), "call-1"));
    assert_eq!(first.task_id, TaskId("t1".into()));
    assert_eq!(first.agent, "ops");
    assert_eq!(first.tool, "shell");
    assert_eq!(first.risk, "dangerous");
    assert_eq!(first.arguments["nul"], "a\u{0}b");
    assert_eq!(first.requested_at, support::start());
    assert_eq!(first.decision, None);

    h.clock.advance(Duration::from_secs(60));
    let again = store.request_approval(&ask("t1", "call-1")).await.unwrap();
    assert_eq!(again, first, "asking again finds the first request");

    let decided = store
        .decide_approval(&first.id, &Approval::Approve)
        .await
        .unwrap();
    let Decided::Recorded(record) = decided else {
        panic!("expected Recorded, got {decided:?}");
    };
    assert_eq!(record.decision, Some(Approval::Approve));
    assert_eq!(
        record.decided_at,
        Some(support::start() + Duration::from_secs(60))
    );

    let second = store
        .decide_approval(&first.id, &Approval::Deny("too late".into()))
        .await
        .unwrap();
    assert_eq!(second, Decided::AlreadyDecided(record.clone()));

    // A resumed run asks again: the answer is there.
    let resumed = store.request_approval(&ask("t1", "call-1")).await.unwrap();
    assert_eq!(resumed, record);
    assert_eq!(store.get_approval(&first.id).await.unwrap(), Some(record));
}

async fn deny_and_edit_keep_their_reason_and_arguments(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let store = approvals(&h);
    let deny = store.request_approval(&ask("t1", "a")).await.unwrap();
    let edit = store.request_approval(&ask("t1", "b")).await.unwrap();
    assert_ne!(deny.id, edit.id);
    store
        .decide_approval(&deny.id, &Approval::Deny("not on a Friday".into()))
        .await
        .unwrap();
    let edited = json!({"command": "ls /tmp/x"});
    store
        .decide_approval(&edit.id, &Approval::Edit(edited.clone()))
        .await
        .unwrap();
    let deny = store.get_approval(&deny.id).await.unwrap().unwrap();
    assert_eq!(
        deny.decision,
        Some(Approval::Deny("not on a Friday".into()))
    );
    let edit = store.get_approval(&edit.id).await.unwrap().unwrap();
    assert_eq!(edit.decision, Some(Approval::Edit(edited)));
}

async fn pending_lists_skip_answered_requests_and_finished_tasks(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let store = approvals(&h);
    let live = h
        .store
        .enqueue(pocket_cluster::NewTask::new("ops", "live"))
        .await
        .unwrap()
        .id;
    let doomed = h
        .store
        .enqueue(pocket_cluster::NewTask::new("ops", "doomed"))
        .await
        .unwrap()
        .id;
    let a = store.request_approval(&ask(&live.0, "c1")).await.unwrap();
    h.clock.advance(Duration::from_millis(5));
    let b = store.request_approval(&ask(&doomed.0, "c1")).await.unwrap();
    h.clock.advance(Duration::from_millis(5));
    let c = store
        .request_approval(&ask("not-a-task", "c1"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_millis(5));
    let d = store.request_approval(&ask(&live.0, "c2")).await.unwrap();

    let ids = |list: Vec<pocket_cluster::store::ApprovalRecord>| {
        list.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let all = ids(store.pending_approvals(0).await.unwrap());
    assert_eq!(all, [a.id.as_str(), &b.id, &c.id, &d.id], "oldest first");
    assert_eq!(
        ids(store.pending_approvals(2).await.unwrap()),
        [a.id.as_str(), &b.id]
    );

    assert!(h.store.cancel(&doomed).await.unwrap());
    store
        .decide_approval(&a.id, &Approval::Approve)
        .await
        .unwrap();
    let left = ids(store.pending_approvals(0).await.unwrap());
    assert_eq!(
        left,
        [c.id.as_str(), &d.id],
        "answered and finished-task requests are not pending"
    );
    // The finished task's request is still kept (an audit trail).
    assert!(store.get_approval(&b.id).await.unwrap().is_some());
}

async fn a_reopened_store_still_has_the_request(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let first = approvals(&h)
        .request_approval(&ask("t1", "call-1"))
        .await
        .unwrap();
    // Another process (or this one after a restart) on the same database.
    let other = h.another().await;
    let other = other.approvals().unwrap();
    let pending = other.pending_approvals(0).await.unwrap();
    assert_eq!(pending, vec![first.clone()]);
    let decided = other
        .decide_approval(&first.id, &Approval::Approve)
        .await
        .unwrap();
    assert!(matches!(decided, Decided::Recorded(_)), "{decided:?}");
    let seen = approvals(&h)
        .get_approval(&first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.decision, Some(Approval::Approve));
}

async fn bad_requests_and_unknown_ids(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let store = approvals(&h);
    for bad in [ask("", "c"), ask("t", ""), ask("t", "c\u{0}")] {
        let err = store.request_approval(&bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
    assert_eq!(
        store
            .decide_approval("apr-unknown", &Approval::Approve)
            .await
            .unwrap(),
        Decided::NotFound
    );
    assert_eq!(store.get_approval("apr-unknown").await.unwrap(), None);
}

async fn racing_answers_record_exactly_one(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let store = approvals(&h);
    let asked = store.request_approval(&ask("t1", "c1")).await.unwrap();
    let answers: Vec<Approval> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                Approval::Approve
            } else {
                Approval::Deny(format!("no {i}"))
            }
        })
        .collect();
    let results =
        futures_util::future::join_all(answers.iter().map(|a| store.decide_approval(&asked.id, a)))
            .await;
    let recorded: Vec<_> = results
        .into_iter()
        .map(Result::unwrap)
        .filter_map(|d| match d {
            Decided::Recorded(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), 1, "exactly one answer wins");
    let stored = store.get_approval(&asked.id).await.unwrap().unwrap();
    assert_eq!(stored.decision, recorded[0].decision);
}
