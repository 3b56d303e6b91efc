//! The run store against moto: the reads an idle worker makes to learn whether a run is done.

use ferry::keyrange::Range;
use ferry::store::Store;
use ferry::store::runs::{CLAIM_SHARDS, ChunkCounts, Claim, NewChunk};

const LEASE_MS: u64 = 60_000;

fn range(after: Option<&str>, upto: Option<&str>) -> Range {
    Range {
        after: after.map(str::to_string),
        upto: upto.map(str::to_string),
    }
}

/// Lists partition `index` of `(after, upto]` as one chunk, kept by its lister when `keep`.
/// Returns the chunk's id.
async fn list_in_one_chunk(store: &Store, index: u32, r: &Range, keep: bool) -> Option<String> {
    let Claim::Claimed(part) = store
        .claim_partition("j", "r1", index, r, "t1", LEASE_MS)
        .await
        .expect("claim partition")
    else {
        panic!("partition {index} is free");
    };
    let new = NewChunk {
        range: r,
        objects: 10,
        bytes: 100,
        last: true,
        keep,
    };
    let (_, kept) = store
        .add_chunk("j", "r1", &part, new, "t1", LEASE_MS)
        .await
        .expect("add chunk");
    kept.map(|c| c.id)
}

async fn open(store: &Store) -> bool {
    store.run_has_open_work("j", "r1").await.expect("read")
}

#[tokio::test]
async fn a_run_shows_open_work_from_its_claim_index_and_partitions_until_its_last_chunk_is_done() {
    let emu = crate::support::Emulator::start();
    let store = Store::from_config(&emu.sdk_config().await, "ferry");
    store.init().await.expect("init");
    store.ensure_run("j", "r1", 1, "{}").await.expect("run");
    assert!(open(&store).await, "a run not planned yet has work left");

    store
        .set_boundaries("j", "r1", &["m".to_string()])
        .await
        .expect("plan");
    assert!(open(&store).await, "no partition is listed");

    let (low, high) = (range(None, Some("m")), range(Some("m"), None));
    let kept = list_in_one_chunk(&store, 0, &low, true)
        .await
        .expect("kept");
    assert!(
        open(&store).await,
        "partition 1 is not listed; chunk 0 is leased"
    );

    assert!(list_in_one_chunk(&store, 1, &high, false).await.is_none());
    let mut pending = Vec::new();
    for shard in 0..CLAIM_SHARDS {
        pending.extend(store.claimable("j", "r1", shard, 10).await.expect("index"));
    }
    assert_eq!(
        pending.len(),
        1,
        "the chunk left to all is claimable: {pending:?}"
    );
    let counts = ChunkCounts {
        copied: 10,
        copied_bytes: 100,
        ..ChunkCounts::default()
    };
    assert!(
        store
            .complete_chunk("j", "r1", &kept, "t1", &counts)
            .await
            .unwrap()
    );
    assert!(
        open(&store).await,
        "every partition is listed, one chunk is pending"
    );
    assert!(!store.run_summary("j", "r1").await.unwrap().complete());

    let claimed = store
        .claim_chunk("j", "r1", &pending[0], "t2", LEASE_MS)
        .await
        .expect("claim")
        .expect("free");
    assert!(open(&store).await, "the last chunk is leased, not done");
    assert!(
        store
            .complete_chunk("j", "r1", &claimed.id, "t2", &counts)
            .await
            .unwrap()
    );
    assert!(!open(&store).await, "nothing is left to list or copy");
    let summary = store.run_summary("j", "r1").await.unwrap();
    assert!(summary.complete());
    assert_eq!(summary.progress.objects_copied, 20);
}
