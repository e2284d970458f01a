//! The apply journal: a record torn or damaged at any byte is read as never written, and so is
//! everything after it; intact records come back exactly; nothing panics.

use serde::{Deserialize, Serialize};
use upgram_client::journal::{self, Journal};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Step {
    Begin { module: String, to: String },
    Backup { file: String },
    Replaced { file: String },
    Commit,
}

fn steps() -> Vec<Step> {
    vec![
        Step::Begin { module: "core".into(), to: "1.1".into() },
        Step::Backup { file: "bin/app".into() },
        Step::Replaced { file: "bin/app".into() },
        Step::Backup { file: "lib/ünïcode.so".into() },
        Step::Commit,
    ]
}

#[test]
fn records_survive_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.journal");
    let mut journal = Journal::create(&path).unwrap();
    for step in steps() {
        journal.append(&step).unwrap();
    }
    drop(journal);
    let (read, clean) = journal::read::<Step>(&path).unwrap();
    assert_eq!((read, clean), (steps(), true));
    assert!(Journal::create(&path).is_err(), "an unfinished journal is never overwritten");
    let mut reopened = Journal::open(&path).unwrap();
    reopened.append(&Step::Commit).unwrap();
    assert_eq!(journal::read::<Step>(&path).unwrap().0.len(), 6);
    journal::remove(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn truncation_at_every_byte_reads_as_a_crash_before_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.journal");
    let mut journal = Journal::create(&path).unwrap();
    let mut ends = Vec::new();
    for step in steps() {
        journal.append(&step).unwrap();
        ends.push(std::fs::metadata(&path).unwrap().len() as usize);
    }
    let bytes = std::fs::read(&path).unwrap();
    for cut in 0..=bytes.len() {
        let (read, clean) = journal::decode::<Step>(&bytes[..cut]);
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(read, steps()[..complete], "cut at {cut}");
        assert_eq!(clean, cut == 0 || ends.contains(&cut), "cut at {cut}");
    }
}

#[test]
fn a_damaged_byte_ends_the_journal_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.journal");
    let mut journal = Journal::create(&path).unwrap();
    let mut ends = vec![0];
    for step in steps() {
        journal.append(&step).unwrap();
        ends.push(std::fs::metadata(&path).unwrap().len() as usize);
    }
    let bytes = std::fs::read(&path).unwrap();
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        let (read, clean) = journal::decode::<Step>(&damaged);
        let record = ends.iter().rposition(|&start| start <= at).unwrap();
        assert!(!clean, "damage at {at} must be noticed");
        assert_eq!(read, steps()[..record], "damage at {at} (in record {record})");
    }
}
