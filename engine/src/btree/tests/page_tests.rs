//! Page encode/decode: round trips of every page kind, corruption and misplacement detected,
//! in-memory state refused, and the seeded decode-of-random-bytes property (never panics; `Ok`
//! only for pages that round-trip).

use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::btree::page::*;

fn leaf_page(id: PageId) -> Page {
    let entries = vec![
        Entry {
            key: b"alpha".to_vec(),
            value: Value::Inline(b"one".to_vec()),
        },
        Entry {
            key: b"beta".to_vec(),
            value: Value::Inline(Vec::new()),
        },
        Entry {
            key: b"gamma".to_vec(),
            value: Value::Overflow(OverflowRef {
                first: PageId::new(3, 10),
                pages: overflow_pages(5, 9000),
                len: 9000,
            }),
        },
    ];
    Page {
        id,
        tree: 1,
        body: PageBody::Node(Node::Leaf(Leaf { entries })),
    }
}

fn branch_page(id: PageId) -> Page {
    Page {
        id,
        tree: 0,
        body: PageBody::Node(Node::Branch(Branch {
            level: 2,
            keys: vec![b"m".to_vec(), b"t".to_vec()],
            children: vec![
                Child::Page(PageId::new(1, 1)),
                Child::Page(PageId::new(1, 2)),
                Child::Page(PageId::new(2, 0)),
            ],
        })),
    }
}

/// A leaf whose plain body exceeds a page but compresses well.
fn big_leaf_page(id: PageId) -> Page {
    let entries = (0..150)
        .map(|i| Entry {
            key: format!("/registry/pods/default/pod-{i:05}").into_bytes(),
            value: Value::Inline(b"phase: Running".to_vec()),
        })
        .collect();
    Page {
        id,
        tree: 0,
        body: PageBody::Node(Node::Leaf(Leaf { entries })),
    }
}

fn sample_pages() -> Vec<Page> {
    let id = PageId::new(7, 42);
    vec![
        leaf_page(id),
        branch_page(id),
        Page {
            id,
            tree: 0,
            body: PageBody::Node(Node::Leaf(Leaf::default())),
        },
        Page {
            id,
            tree: 2,
            body: PageBody::OverflowHead {
                key: b"gamma".to_vec(),
                value_len: 9000,
                pages: overflow_pages(5, 9000),
                data: vec![5; overflow_head_chunk(5, 9000)],
            },
        },
        Page {
            id,
            tree: 3,
            body: PageBody::OverflowTail {
                index: 2,
                data: vec![6; 900],
            },
        },
    ]
}

#[test]
fn page_round_trip_every_kind() {
    for p in sample_pages() {
        let bytes = encode_page(&p, false).expect("encode");
        assert_eq!(bytes.len(), PAGE_SIZE);
        assert_eq!(decode_page(p.id, &bytes), Ok(p.clone()));
        // Pages that fit are never compressed, so lz4 does not change their bytes.
        assert_eq!(encode_page(&p, true).expect("encode"), bytes);
    }
}

#[test]
fn page_compressed_leaf_round_trip() {
    let p = big_leaf_page(PageId::new(1, 0));
    let PageBody::Node(n) = &p.body else {
        unreachable!()
    };
    assert!(n.body_len() > BODY_MAX);
    assert!(matches!(
        encode_page(&p, false),
        Err(EncodeError::TooLarge { .. })
    ));
    assert!(node_fits(n, true) && !node_fits(n, false));
    let bytes = encode_page(&p, true).expect("compresses");
    assert_eq!(bytes[5], 1, "lz4 flag set");
    assert_eq!(decode_page(p.id, &bytes), Ok(p));
}

#[test]
fn page_corruption_is_detected_at_every_byte() {
    for p in sample_pages()
        .into_iter()
        .chain([big_leaf_page(PageId::new(7, 42))])
    {
        let bytes = encode_page(&p, true).expect("encode");
        for i in 0..PAGE_SIZE {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            match decode_page(p.id, &b) {
                Err(PageError::ChecksumMismatch {
                    page,
                    expected,
                    actual,
                }) => {
                    assert_eq!(page, p.id);
                    assert_ne!(expected, actual);
                }
                other => panic!("flip at {i}: {other:?}"),
            }
        }
    }
}

#[test]
fn page_read_from_the_wrong_place_is_refused() {
    let p = leaf_page(PageId::new(7, 42));
    let bytes = encode_page(&p, false).expect("encode");
    assert_eq!(
        decode_page(PageId::new(7, 43), &bytes),
        Err(PageError::Misplaced {
            page: PageId::new(7, 43),
            found: PageId::new(7, 42)
        })
    );
    assert!(decode_page(p.id, &bytes[..100]).is_err());
}

#[test]
fn page_encode_refuses_in_memory_state() {
    let pending = Page {
        id: PageId::new(1, 0),
        tree: 0,
        body: PageBody::Node(Node::Leaf(Leaf {
            entries: vec![Entry {
                key: b"k".to_vec(),
                value: Value::Pending(Rc::from(&b"v"[..])),
            }],
        })),
    };
    assert_eq!(encode_page(&pending, false), Err(EncodeError::NotDurable));
    let mut dirty = branch_page(PageId::new(1, 0));
    if let PageBody::Node(Node::Branch(b)) = &mut dirty.body {
        b.children[1] = Child::Dirty(9);
    }
    assert_eq!(encode_page(&dirty, false), Err(EncodeError::NotDurable));
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[4..]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// `decode` Ok => the page round-trips: byte for byte when uncompressed, by content when
/// compressed (see the module doc of `page`).
fn check_round_trip(at: PageId, bytes: &[u8]) -> bool {
    let Ok(p) = decode_page(at, bytes) else {
        return false;
    };
    let again = encode_page(&p, true).expect("a decoded page encodes");
    if bytes[5] == 0 {
        assert_eq!(
            again, bytes,
            "uncompressed page must round-trip byte for byte"
        );
    } else {
        assert_eq!(decode_page(at, &again), Ok(p), "compressed page content");
    }
    true
}

#[test]
fn page_decode_of_random_bytes_never_panics_and_ok_means_round_trip() {
    let mut rng = StdRng::seed_from_u64(0xBA11A57);
    let at = PageId::new(7, 42);
    let valid: Vec<Vec<u8>> = sample_pages()
        .into_iter()
        .chain([big_leaf_page(at)])
        .map(|p| encode_page(&p, true).expect("encode"))
        .collect();
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut b = match round % 4 {
            // Pure noise (with a valid checksum, or nothing past the crc would be tested).
            0 => (0..PAGE_SIZE).map(|_| rng.gen()).collect(),
            // A valid header over a noisy body.
            1 => {
                let mut b = valid[rng.gen_range(0..valid.len())].clone();
                let len = rng.gen_range(0..=BODY_MAX);
                for x in &mut b[32..32 + len] {
                    *x = rng.gen();
                }
                b
            }
            // A valid page with a few mutated bytes anywhere past the crc.
            _ => {
                let mut b = valid[rng.gen_range(0..valid.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let i = if rng.gen_bool(0.5) {
                        rng.gen_range(4..64)
                    } else {
                        rng.gen_range(4..PAGE_SIZE)
                    };
                    b[i] = rng.gen();
                }
                b
            }
        };
        if round % 4 != 0 || rng.gen_bool(0.5) {
            // Keep the location right so decoding goes past the header checks.
            b[8..16].copy_from_slice(&at.0.to_le_bytes());
        }
        fix_crc(&mut b);
        if check_round_trip(at, &b) {
            accepted += 1;
        }
    }
    for v in &valid {
        assert!(check_round_trip(at, v));
    }
    // Some mutations (e.g. of a value byte) stay valid pages; they must have round-tripped.
    assert!(accepted > 0);
}
