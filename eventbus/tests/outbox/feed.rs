//! The outbox as a pull feed (`eventbus::outbox::feed`): committed rows
//! only, never one behind a cursor already handed out (the PostgreSQL
//! late-commit trap), topics, waiting, and cursors expired by retention.

use std::time::Duration;

use eventbus::feed::{Cursor, Feed, FeedError, FeedPage};
use eventbus::outbox::{self, Relay, RelayOptions};
use eventbus::transport::Topics;

use crate::common::*;

/// The `n` of each entry of `page`.
fn ns(page: &FeedPage) -> Vec<u64> {
    page.entries.iter().map(|e| read(&e.payload).n).collect()
}

async fn read_all(feed: &outbox::OutboxFeed, after: Option<&Cursor>) -> FeedPage {
    feed.read(after, &Topics::All, 100)
        .await
        .expect("read the feed")
}

/// [`read_all`] once it has `n` entries. On PostgreSQL a committed row is
/// served once every older transaction of the cluster has ended, and other
/// tests share the cluster: their open transactions hold it back a little.
async fn settled(feed: &outbox::OutboxFeed, after: Option<&Cursor>, n: usize) -> FeedPage {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = read_all(feed, after).await;
        if page.entries.len() >= n || std::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every cursor of a page sorts after the one before it: a read after each
/// returns exactly the entries that follow it.
async fn assert_cursors_chain(feed: &outbox::OutboxFeed, after: Option<&Cursor>, page: &FeedPage) {
    let all = ns(page);
    for (i, entry) in page.entries.iter().enumerate() {
        let rest = read_all(feed, Some(&entry.cursor)).await;
        assert_eq!(ns(&rest), all[i + 1..], "after {}", entry.cursor);
        assert!(
            entry
                .cursor
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)),
            "URL-safe: {}",
            entry.cursor
        );
    }
    let again = read_all(feed, after).await;
    assert_eq!(ns(&again), all, "reads are repeatable");
}

/// Retention deleted rows after `c1`: a read after it is `Expired`, naming a
/// cursor that works; reading without a cursor still works.
async fn retention_expires_cursors(db: Db) {
    let recorder = Recorder::default();
    let bus = bus_on(recorder.clone()).await;
    let feed = outbox::feed(db.database());
    db.publish(&bus, &[Item::Note(1), Item::Note(2), Item::Note(3)], true)
        .await;
    settled(&feed, None, 3).await;
    let first = feed.read(None, &Topics::All, 1).await.unwrap();
    assert_eq!(ns(&first), [1]);
    let c1 = first.next.clone().expect("a cursor");
    assert_eq!(first.entries[0].cursor, c1);

    let relay = Relay::new(
        bus.clone(),
        RelayOptions::new(db.database()).retention(Some(Duration::from_millis(1))),
    );
    assert_eq!(relay.run_once().await.unwrap().published, 3);
    // Published rows stay in the feed until the retention removes them.
    assert_eq!(ns(&read_all(&feed, Some(&c1)).await), [2, 3]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let deleted = relay.cleanup().await.unwrap();
    assert!(deleted >= 2, "deleted {deleted}");

    let earliest = match feed.read(Some(&c1), &Topics::All, 10).await {
        Err(FeedError::Expired { cursor, earliest }) => {
            assert_eq!(cursor, c1);
            earliest
        }
        other => panic!("expected Expired, got {other:?}"),
    };
    // `wait` does not hang on an expired cursor: the read says why.
    feed.wait(Some(&c1), &Topics::All, Duration::from_secs(30))
        .await
        .unwrap();
    let rest = read_all(&feed, Some(&earliest)).await;
    db.publish(&bus, &[Item::Note(4)], true).await;
    let after = settled(&feed, rest.next.as_ref(), 1).await;
    assert_eq!(ns(&after), [4], "a row written after the cleanup is served");
    let from_start = read_all(&feed, None).await;
    assert_eq!(ns(&from_start).last(), Some(&4));
    assert!(
        matches!(
            feed.read(Some(&Cursor::new("x.1")), &Topics::All, 1).await,
            Err(FeedError::InvalidCursor(_))
        ),
        "a cursor the feed never issued"
    );
}

/// Topics filter on the type; an empty list is an empty page.
async fn topics_filter_the_type(db: Db) {
    let bus = bus_on(Recorder::default()).await;
    let feed = outbox::feed(db.database());
    db.publish(
        &bus,
        &[Item::Note(1), Item::Keyed("k".into(), 2), Item::Note(3)],
        true,
    )
    .await;
    settled(&feed, None, 3).await;
    let keyed = feed
        .read(None, &Topics::Types(vec!["outbox_test.keyed".into()]), 10)
        .await
        .unwrap();
    assert_eq!(ns(&keyed), [2]);
    assert_eq!(&*keyed.entries[0].event_type, "outbox_test.keyed");
    let notes = feed
        .read(
            keyed.next.as_ref(),
            &Topics::Types(vec!["outbox_test.note".into()]),
            10,
        )
        .await
        .unwrap();
    assert_eq!(ns(&notes), [3]);
    let none = feed.read(None, &Topics::Types(vec![]), 10).await.unwrap();
    assert!(none.entries.is_empty() && none.next.is_none());
    let all = read_all(&feed, None).await;
    assert_eq!(ns(&all), [1, 2, 3]);
    assert_cursors_chain(&feed, None, &all).await;
}

/// `wait` returns once a row is committed after the cursor.
async fn wait_wakes_on_a_commit(db: Db, feed: outbox::OutboxFeed) {
    let bus = bus_on(Recorder::default()).await;
    db.publish(&bus, &[Item::Note(1)], true).await;
    let page = settled(&feed, None, 1).await;
    let cursor = page.next.clone().unwrap();
    // Nothing after it: waits out the timeout.
    feed.wait(Some(&cursor), &Topics::All, Duration::from_millis(100))
        .await
        .unwrap();
    let waiting = {
        let feed = feed.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            feed.wait(Some(&cursor), &Topics::All, Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "woke with nothing new");
    db.publish(&bus, &[Item::Note(2)], true).await;
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("wait did not wake on the commit")
        .unwrap()
        .unwrap();
    assert_eq!(ns(&settled(&feed, Some(&cursor), 1).await), [2]);
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    /// The trap: transaction A holds the lower seq (or the lower xid) and
    /// commits after B. B must not be served while A is open (or A would
    /// land behind a cursor a client already has), and after A commits a
    /// read after the last cursor returns A.
    #[tokio::test]
    async fn a_transaction_that_commits_late_is_never_skipped() {
        let db = Db::postgres().await;
        let Db::Pg(pool, _) = &db else { unreachable!() };
        let bus = bus_on(Recorder::default()).await;
        let outbox = bus.outbox();
        let feed = outbox::feed(pool);
        db.publish(&bus, &[Item::Note(0)], true).await;
        let c0 = settled(&feed, None, 1).await.next.expect("a cursor");

        // A inserts first (the lower seq) and stays open; B inserts and commits.
        let mut a = pool.begin().await.unwrap();
        outbox.publish(&mut a, Note { n: 1 }).await.unwrap();
        let mut b = pool.begin().await.unwrap();
        outbox.publish(&mut b, Note { n: 2 }).await.unwrap();
        b.commit().await.unwrap();
        let page = read_all(&feed, Some(&c0)).await;
        assert_eq!(
            ns(&page),
            Vec::<u64>::new(),
            "B served while A, before it, is open"
        );
        assert_eq!(page.next.as_ref(), Some(&c0));
        a.commit().await.unwrap();
        let page = settled(&feed, Some(&c0), 2).await;
        assert_eq!(ns(&page), [1, 2]);
        assert_cursors_chain(&feed, Some(&c0), &page).await;
        let c2 = page.next.clone().unwrap();

        // A takes its transaction id first but inserts after B commits (so
        // A's seq is the higher one): B waits for A, and both are served in
        // transaction order, A first.
        let mut a = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *a)
            .await
            .unwrap();
        let mut b = pool.begin().await.unwrap();
        outbox.publish(&mut b, Note { n: 4 }).await.unwrap();
        b.commit().await.unwrap();
        outbox.publish(&mut a, Note { n: 3 }).await.unwrap();
        assert!(ns(&read_all(&feed, Some(&c2)).await).is_empty());
        a.commit().await.unwrap();
        let page = settled(&feed, Some(&c2), 2).await;
        assert_eq!(ns(&page), [3, 4], "transaction order, not seq order");
        assert_cursors_chain(&feed, Some(&c2), &page).await;

        // A rolled-back transaction leaves nothing; the feed moves on.
        let c4 = page.next.unwrap();
        let mut a = pool.begin().await.unwrap();
        outbox.publish(&mut a, Note { n: 5 }).await.unwrap();
        a.rollback().await.unwrap();
        db.publish(&bus, &[Item::Note(6)], true).await;
        assert_eq!(ns(&settled(&feed, Some(&c4), 1).await), [6]);
    }

    #[tokio::test]
    async fn retention_expires_cursors_with_the_earliest_valid_one() {
        retention_expires_cursors(Db::postgres().await).await;
    }

    #[tokio::test]
    async fn topics_filter_on_the_event_type() {
        topics_filter_the_type(Db::postgres().await).await;
    }

    /// With a poll interval of a minute, only the NOTIFY can wake it in time.
    #[tokio::test]
    async fn wait_is_woken_by_notify() {
        let db = Db::postgres().await;
        let feed = outbox::feed(db.database()).poll_interval(Duration::from_secs(60));
        wait_wakes_on_a_commit(db, feed).await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    /// SQLite serializes writers: a second writer waits for the first to
    /// commit, so seq order is commit order.
    #[tokio::test]
    async fn seq_order_is_commit_order() {
        let db = Db::sqlite().await;
        let Db::Sqlite(pool, ..) = &db else {
            unreachable!()
        };
        let bus = bus_on(Recorder::default()).await;
        let outbox = bus.outbox();
        let feed = outbox::feed(pool);

        let mut a = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        outbox.publish(&mut a, Note { n: 1 }).await.unwrap();
        let b = {
            let pool = pool.clone();
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut b = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                outbox.publish(&mut b, Note { n: 2 }).await.unwrap();
                b.commit().await.unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            read_all(&feed, None).await.entries.is_empty(),
            "uncommitted rows served"
        );
        a.commit().await.unwrap();
        b.await.unwrap();
        let page = read_all(&feed, None).await;
        assert_eq!(ns(&page), [1, 2]);
        assert_cursors_chain(&feed, None, &page).await;
    }

    #[tokio::test]
    async fn retention_expires_cursors_with_the_earliest_valid_one() {
        retention_expires_cursors(Db::sqlite().await).await;
    }

    /// The newest row survives the cleanup, so its seq is never handed out again.
    #[tokio::test]
    async fn the_cleanup_keeps_the_newest_row_so_seqs_are_never_reused() {
        let db = Db::sqlite().await;
        let bus = bus_on(Recorder::default()).await;
        let feed = outbox::feed(db.database());
        db.publish(&bus, &[Item::Note(1), Item::Note(2)], true)
            .await;
        let last = read_all(&feed, None).await.next.unwrap();
        let relay = Relay::new(
            bus.clone(),
            RelayOptions::new(db.database()).retention(Some(Duration::from_millis(1))),
        );
        relay.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(relay.cleanup().await.unwrap(), 1);
        db.publish(&bus, &[Item::Note(3)], true).await;
        assert_eq!(ns(&read_all(&feed, Some(&last)).await), [3]);
    }

    #[tokio::test]
    async fn topics_filter_on_the_event_type() {
        topics_filter_the_type(Db::sqlite().await).await;
    }

    #[tokio::test]
    async fn wait_polls_until_a_commit() {
        let db = Db::sqlite().await;
        let feed = outbox::feed(db.database());
        wait_wakes_on_a_commit(db, feed).await;
    }
}
