//! The log on real files: order, exactly-once reads, torn tails, spills, rotation.

use super::*;
use crate::recorder::redact;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "llmtap-journal-{tag}-{}-{}",
            std::process::id(),
            crate::timefmt::now_unix_us()
        ));
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &Dir) -> JournalOptions {
    JournalOptions::new(dir.0.join("journal"), Duration::from_millis(5), None)
}

fn call(i: usize) -> FinishedCall {
    crate::dev::synthetic_finished_call(i, 300 + i % 7 * 50)
}

/// Appends `calls` and closes the log; returns the redacted calls in order.
fn append(options: &JournalOptions, range: std::ops::Range<usize>) -> Vec<RedactedCall> {
    let metrics = Arc::new(Metrics::default());
    let journal = open(options.clone(), metrics).unwrap();
    let mut expected = Vec::new();
    for i in range {
        let c = call(i);
        expected.push(redact(c.clone()));
        journal.sender.send(Box::new(c)).unwrap();
    }
    drop(journal.sender);
    journal.appender.join().unwrap();
    drop(journal.feed);
    expected
}

/// Reopens the log and reads everything from `applied` on, as a restarted writer would.
fn replay(options: &JournalOptions, applied: Option<u64>) -> (Vec<Entry>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let journal = open(options.clone(), metrics.clone()).unwrap();
    drop(journal.sender);
    let mut feed = journal.feed;
    feed.start_at(applied);
    let all = drain(&mut feed, 7);
    journal.appender.join().unwrap();
    (all, metrics)
}

/// Reads the feed in batches of at most `max` until the log closes.
fn drain(feed: &mut Feed, max: usize) -> Vec<Entry> {
    let mut all = Vec::new();
    loop {
        let mut batch = Vec::new();
        let state = feed.fill(&mut batch, max, Some(Duration::from_millis(20)));
        all.extend(batch);
        if state == FeedState::Closed {
            return all;
        }
    }
}

fn assert_in_order(entries: &[Entry]) {
    for pair in entries.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "records are contiguous");
    }
}

#[test]
fn records_read_back_in_order_exactly_once() {
    let dir = Dir::new("order");
    let options = options(&dir);
    let expected = append(&options, 0..50);
    let (entries, _) = replay(&options, None);
    assert_eq!(entries.len(), 50);
    assert_in_order(&entries);
    for (entry, want) in entries.iter().zip(&expected) {
        assert_eq!(&entry.call, want);
        assert!(entry.from_disk);
    }
    // From a position on: only what follows it.
    let (tail, _) = replay(&options, Some(entries[30].start));
    assert_eq!(tail.len(), 20);
    assert_eq!(tail[0].call.facts.id, expected[30].facts.id);
}

#[test]
fn no_secret_reaches_the_log() {
    let dir = Dir::new("secret");
    let options = options(&dir);
    let mut c = call(1);
    c.query = Some("alt=sse&key=AIzaSECRETQUERY".into());
    c.request_headers.insert(
        "x-api-key",
        http::HeaderValue::from_static("sk-ant-SECRETHEADER"),
    );
    c.response_headers.append(
        "set-cookie",
        http::HeaderValue::from_static("session=SECRETCOOKIE"),
    );
    let metrics = Arc::new(Metrics::default());
    let journal = open(options.clone(), metrics).unwrap();
    journal.sender.send(Box::new(c)).unwrap();
    drop(journal.sender);
    journal.appender.join().unwrap();
    drop(journal.feed);
    let mut bytes = Vec::new();
    for start in segment::list(&options.dir).unwrap() {
        bytes.extend(std::fs::read(segment::path_of(&options.dir, start)).unwrap());
    }
    let text = String::from_utf8_lossy(&bytes);
    for secret in [
        "SECRETQUERY",
        "SECRETHEADER",
        "SECRETCOOKIE",
        "sk-bench-0000",
    ] {
        assert!(!text.contains(secret), "{secret} reached the log");
    }
    assert!(text.contains("[redacted]"));
}

#[test]
fn a_torn_last_record_is_skipped_and_the_log_goes_on_after_it() {
    let dir = Dir::new("torn");
    let options = options(&dir);
    let expected = append(&options, 0..10);
    let last = *segment::list(&options.dir).unwrap().last().unwrap();
    let path = segment::path_of(&options.dir, last);
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut the last record short, as a crash in the middle of its write would.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 17).unwrap();
    drop(file);
    let (entries, metrics) = replay(&options, None);
    assert_eq!(entries.len(), 9);
    assert_eq!(metrics.log_torn.load(Ordering::Relaxed), 1);
    assert_eq!(entries[8].call.facts.id, expected[8].facts.id);
    // New records follow the last whole one; nothing of the torn one is read.
    let more = append(&options, 10..13);
    let (entries, _) = replay(&options, None);
    assert_eq!(entries.len(), 12);
    assert_in_order(&entries);
    assert_eq!(entries[9].call.facts.id, more[0].facts.id);
}

#[test]
fn a_corrupt_last_record_is_skipped_never_applied_half() {
    let dir = Dir::new("flip");
    let options = options(&dir);
    append(&options, 0..5);
    let last = *segment::list(&options.dir).unwrap().last().unwrap();
    let path = segment::path_of(&options.dir, last);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x10;
    // And garbage after it, as a half-written next record would leave.
    bytes.extend_from_slice(&[0xff; 5]);
    std::fs::write(&path, &bytes).unwrap();
    let (entries, metrics) = replay(&options, None);
    assert_eq!(entries.len(), 4);
    assert_eq!(metrics.log_torn.load(Ordering::Relaxed), 1);
}

#[test]
fn a_full_handoff_spills_to_disk_reads_without_loss_or_repeat() {
    let dir = Dir::new("spill");
    let mut options = options(&dir);
    // Room in memory for about three records: the rest is read back from disk.
    options.handoff_bytes = 3 * 1500;
    options.segment_bytes = 8 * 1024;
    let metrics = Arc::new(Metrics::default());
    let journal = open(options.clone(), metrics).unwrap();
    let mut feed = journal.feed;
    feed.start_at(None);
    let mut ids = Vec::new();
    for i in 0..200 {
        let c = call(i);
        ids.push(c.facts.id.clone());
        journal.sender.send(Box::new(c)).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(journal.sender);
    let mut got = Vec::new();
    let mut from_disk = 0;
    loop {
        let mut batch = Vec::new();
        let state = feed.fill(&mut batch, 16, Some(Duration::from_millis(20)));
        from_disk += batch.iter().filter(|e| e.from_disk).count();
        got.extend(batch);
        if state == FeedState::Closed {
            break;
        }
    }
    journal.appender.join().unwrap();
    assert_in_order(&got);
    let got_ids: Vec<String> = got.iter().map(|e| e.call.facts.id.clone()).collect();
    assert_eq!(got_ids, ids);
    assert!(from_disk > 100, "only {from_disk} read from disk");
    assert!(from_disk < 200, "nothing came from memory");
    let end = got.last().unwrap().end;
    // How many segments there are depends on how the appender grouped the sends
    // (a loaded machine makes fewer, larger groups); retiring leaves only the active one.
    if segment::list(&options.dir).unwrap().len() > 1 {
        assert!(feed.retirable(end));
        feed.retire(end);
    }
    assert_eq!(segment::list(&options.dir).unwrap().len(), 1);
    assert!(!feed.retirable(end));
}

#[test]
fn sealed_records_carry_no_text_and_need_the_key() {
    let dir = Dir::new("sealed");
    let mut options = options(&dir);
    options.keys = Some(Arc::new(Keyring::from_text(&"5a".repeat(32)).unwrap()));
    let expected = append(&options, 0..3);
    let bytes = std::fs::read(segment::path_of(&options.dir, 0)).unwrap();
    let marker = &expected[0].request_body.bytes[60..100];
    assert!(!bytes.windows(marker.len()).any(|w| w == marker));
    let (entries, _) = replay(&options, None);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].call, expected[0]);
    let mut keyless = options.clone();
    keyless.keys = None;
    let (entries, metrics) = replay(&keyless, None);
    assert!(entries.is_empty());
    assert_eq!(metrics.capture_failures.load(Ordering::Relaxed), 3);
}

#[test]
fn a_second_process_on_the_log_is_refused() {
    let dir = Dir::new("lock");
    let options = options(&dir);
    let first = open(options.clone(), Arc::new(Metrics::default())).unwrap();
    let second = open(options.clone(), Arc::new(Metrics::default()));
    assert!(matches!(second, Err(JournalError::Locked { .. })));
    drop(first.sender);
    first.appender.join().unwrap();
    drop(first.feed);
    assert!(open(options, Arc::new(Metrics::default())).is_ok());
}

#[test]
fn a_record_built_from_the_log_equals_the_one_built_directly() {
    let prices = crate::cost::PriceTable::load(None).unwrap();
    let mut calls = Vec::new();
    let mut with_secrets = call(11);
    with_secrets.query = Some("alt=sse&key=AIzaSECRETSECRET".into());
    with_secrets.request_headers.append(
        "authorization",
        http::HeaderValue::from_static("Bearer sk-second-value-123456"),
    );
    with_secrets
        .request_headers
        .insert("cookie", http::HeaderValue::from_static("a=1"));
    with_secrets
        .response_headers
        .insert("set-cookie", http::HeaderValue::from_static("b=2"));
    calls.push(with_secrets);
    let mut gemini_key = call(12);
    gemini_key.request_headers.remove("authorization");
    gemini_key.query = Some("key=AIzaSECRETSECRETSECRET".into());
    calls.push(gemini_key);
    let mut canceled = call(13);
    canceled.facts.outcome = crate::capture::Outcome::Canceled;
    canceled.response_body = crate::capture::Capture::default();
    canceled.facts.meta.omit_request = true;
    calls.push(canceled);
    for (i, finished) in calls.into_iter().enumerate() {
        let direct = crate::recorder::build_record(finished.clone(), &prices);
        let mut frame = Vec::new();
        format::encode_frame(&mut frame, 1, &redact(finished), None).unwrap();
        let (_, decoded) = format::decode_frame(&frame, None).unwrap();
        let from_log = crate::recorder::build_redacted(decoded, &prices);
        assert_eq!(from_log, direct, "call {i}");
    }
}

#[test]
fn a_segment_larger_than_a_read_chunk_and_a_frame_larger_than_one_reopen_whole() {
    let dir = Dir::new("large");
    let options = options(&dir);
    let metrics = Arc::new(Metrics::default());
    let journal = open(options.clone(), metrics).unwrap();
    let mut ids = Vec::new();
    for i in 0..3000 {
        let mut c = call(i);
        if i == 1500 {
            // A body bigger than the 4 MiB read chunk.
            c.request_body = crate::capture::Capture::default();
            c.request_body
                .push(&bytes::Bytes::from(vec![b'x'; 5 << 20]), usize::MAX);
        }
        ids.push(c.facts.id.clone());
        journal.sender.send(Box::new(c)).unwrap();
    }
    drop(journal.sender);
    journal.appender.join().unwrap();
    drop(journal.feed);
    let (entries, metrics) = replay(&options, None);
    assert_eq!(metrics.log_torn.load(Ordering::Relaxed), 0);
    assert_in_order(&entries);
    let got: Vec<String> = entries.iter().map(|e| e.call.facts.id.clone()).collect();
    assert_eq!(got, ids);
    assert_eq!(entries[1500].call.request_body.bytes.len(), 5 << 20);
}

/// Issue 33, finding 5: eight bytes flipped in the middle of a segment of 100
/// unapplied records lose the one record they hit, not the 50 after it; the loss
/// is counted, and new records still follow the last whole one.
#[test]
fn damage_in_the_middle_loses_only_the_damaged_record() {
    let dir = Dir::new("damage");
    let options = options(&dir);
    let expected = append(&options, 0..100);
    let last = *segment::list(&options.dir).unwrap().last().unwrap();
    let path = segment::path_of(&options.dir, last);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    let middle = len / 2;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (entries, metrics) = replay(&options, None);
    assert_eq!(entries.len(), 99, "only the damaged record is lost");
    assert!(entries.windows(2).all(|w| w[0].end <= w[1].start));
    let got: Vec<&str> = entries.iter().map(|e| e.call.facts.id.as_str()).collect();
    let lost: Vec<&str> = expected
        .iter()
        .map(|c| c.facts.id.as_str())
        .filter(|id| !got.contains(id))
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(metrics.log_damaged.load(Ordering::Relaxed), 1);
    assert!(metrics.log_damaged_bytes.load(Ordering::Relaxed) > 0);
    assert_eq!(metrics.capture_failures.load(Ordering::Relaxed), 1);
    // Not cut at the damage: the segment keeps its length, and records appended
    // now follow the last whole one.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64);
    let more = append(&options, 100..103);
    let (entries, _) = replay(&options, None);
    assert_eq!(entries.len(), 102);
    assert_eq!(entries[101].call.facts.id, more[2].facts.id);
}

/// A byte flipped anywhere in a small log costs exactly the frame it is in.
#[test]
fn a_scan_steps_over_damage_wherever_it_is() {
    let dir = Dir::new("damage-walk");
    let options = options(&dir);
    append(&options, 0..6);
    let last = *segment::list(&options.dir).unwrap().last().unwrap();
    let path = segment::path_of(&options.dir, last);
    let clean = std::fs::read(&path).unwrap();
    let step = (clean.len() / 40).max(1);
    for at in (0..clean.len()).step_by(step) {
        let mut bytes = clean.clone();
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let scan = segment::scan(&file).unwrap();
        assert_eq!(
            scan.frames, 5,
            "one byte flipped at {at} costs one frame: {scan:?}"
        );
    }
}

#[test]
fn a_segment_closes_by_age_so_a_busy_log_can_retire_what_it_applied() {
    let dir = Dir::new("age");
    let mut options = options(&dir);
    // Far from full: only age closes these segments.
    options.segment_max_age = Duration::from_millis(40);
    let metrics = Arc::new(Metrics::default());
    let journal = open(options.clone(), metrics).unwrap();
    let mut feed = journal.feed;
    feed.start_at(None);
    let mut ids = Vec::new();
    let mut got = Vec::new();
    for i in 0..12 {
        let c = call(i);
        ids.push(c.facts.id.clone());
        journal.sender.send(Box::new(c)).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        let mut batch = Vec::new();
        feed.fill(&mut batch, 16, Some(Duration::from_millis(50)));
        got.extend(batch);
        // What was read is applied: everything wholly before it goes.
        if let Some(end) = got.last().map(|e: &Entry| e.end) {
            if feed.retirable(end) {
                feed.retire(end);
            }
        }
        // Never more than the active segment and the one it followed.
        assert!(segment::list(&options.dir).unwrap().len() <= 2);
    }
    drop(journal.sender);
    got.extend(drain(&mut feed, 16));
    journal.appender.join().unwrap();
    assert_in_order(&got);
    let got_ids: Vec<String> = got.iter().map(|e| e.call.facts.id.clone()).collect();
    assert_eq!(got_ids, ids);
    let end = got.last().unwrap().end;
    if feed.retirable(end) {
        feed.retire(end);
    }
    // 12 calls 15 ms apart over segments of at most 40 ms: several were closed and
    // deleted; the first positions are no longer on disk.
    let left = segment::list(&options.dir).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0] > 0);
    // What is left reads back whole after a restart, from the applied position.
    drop(feed);
    let (entries, _) = replay(&options, Some(end));
    assert!(entries.is_empty());
}
