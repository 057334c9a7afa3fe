//! Decoding stored bytes is total: corrupt or truncated input gives an error,
//! never a panic, and valid records round-trip.

use bytes::Bytes;
use kelson_store::codec::{decode_revision, encode_revision, Reader, Record};
use kelson_store::snapshot;
use kelson_store::EventKind;
use proptest::prelude::*;

fn record() -> impl Strategy<Value = Record> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 1..64),
        proptest::collection::vec(any::<u8>(), 0..256),
        1..u64::MAX,
        1..u64::MAX,
        1..u64::MAX,
    )
        .prop_map(|(put, key, value, create, version, prev)| {
            if put {
                Record {
                    kind: EventKind::Put,
                    key: key.into(),
                    value: value.into(),
                    create_revision: create,
                    version,
                    prev_revision: prev % 3, // creates have no previous version
                }
            } else {
                Record {
                    kind: EventKind::Delete,
                    key: key.into(),
                    value: Bytes::new(),
                    create_revision: 0,
                    version: 0,
                    prev_revision: prev,
                }
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Record::decode(&bytes);
        let _ = decode_revision(&bytes);
        let mut r = Reader::new(&bytes);
        let _ = r.varint("v");
        let _ = r.len_prefixed("l");
        let _ = snapshot::read(&bytes[..], |_, _| Ok(()));
    }

    #[test]
    fn records_round_trip(rec in record()) {
        prop_assert_eq!(Record::decode(&rec.encode()).unwrap(), rec);
    }

    #[test]
    fn damaged_records_are_rejected(rec in record(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let enc = rec.encode();
        let n = cut.index(enc.len());
        prop_assert!(Record::decode(&enc[..n]).is_err());
        let mut bad = enc.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(Record::decode(&bad).is_err());
    }

    #[test]
    fn revision_keys_round_trip_and_reject_other_lengths(rev in any::<u64>(), extra in proptest::collection::vec(any::<u8>(), 0..16)) {
        prop_assert_eq!(decode_revision(&encode_revision(rev)).unwrap(), rev);
        if extra.len() != 8 {
            prop_assert!(decode_revision(&extra).is_err());
        }
    }
}
