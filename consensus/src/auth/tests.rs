use super::*;

fn perm(t: PermType, key: &str, end: &str) -> Permission {
    Permission {
        perm_type: t,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
    }
}

fn ok(granted: &[Permission], key: &str, end: &str) -> bool {
    let refs: Vec<&Permission> = granted.iter().collect();
    permits(&refs, key.as_bytes(), end.as_bytes())
}

#[test]
fn single_key_permissions() {
    let g = [perm(PermType::READ, "foo", "")];
    assert!(ok(&g, "foo", ""));
    assert!(!ok(&g, "fo", ""));
    assert!(!ok(&g, "foo0", ""));
    // A range of exactly the one key is covered: [foo, foo\0).
    assert!(ok(&g, "foo", "foo\0"));
    assert!(!ok(&g, "foo", "fop"));
}

#[test]
fn range_and_prefix_permissions() {
    // `etcdctl role grant-permission r read /a/ --prefix` sends [/a/, /a0).
    let g = [perm(PermType::READ, "/a/", "/a0")];
    assert!(ok(&g, "/a/x", ""));
    assert!(ok(&g, "/a/", ""));
    assert!(!ok(&g, "/a0", ""));
    assert!(!ok(&g, "/b", ""));
    // The prefix itself as a range, and ranges inside it.
    assert!(ok(&g, "/a/", "/a0"));
    assert!(ok(&g, "/a/b", "/a/c"));
    // A range reaching past the grant.
    assert!(!ok(&g, "/a/", "/b"));
    assert!(!ok(&g, "/", "/a0"));
    // From a key (range_end "\0") is not covered by a bounded grant.
    assert!(!ok(&g, "/a/", "\0"));
}

#[test]
fn from_key_permissions() {
    // range_end "\0": every key from "m".
    let g = [perm(PermType::WRITE, "m", "\0")];
    assert!(ok(&g, "m", ""));
    assert!(ok(&g, "zzz", ""));
    assert!(!ok(&g, "l", ""));
    assert!(ok(&g, "m", "\0"));
    assert!(ok(&g, "x", "\0"));
    assert!(ok(&g, "n", "p"));
    assert!(!ok(&g, "a", "\0"));
    assert!(!ok(&g, "a", "n"));
}

#[test]
fn adjacent_grants_join_and_gaps_refuse() {
    let joined = [
        perm(PermType::READ, "a", "c"),
        perm(PermType::READ, "c", "e"),
    ];
    assert!(ok(&joined, "b", "d"));
    assert!(ok(&joined, "a", "e"));
    assert!(!ok(&joined, "a", "f"));
    let gap = [
        perm(PermType::READ, "a", "b"),
        perm(PermType::READ, "c", "e"),
    ];
    assert!(!ok(&gap, "a", "d"));
    assert!(ok(&gap, "c", "d"));
    // Overlapping grants in any order.
    let overlap = [
        perm(PermType::READ, "d", "k"),
        perm(PermType::READ, "a", "f"),
    ];
    assert!(ok(&overlap, "b", "j"));
    assert!(!ok(&[], "a", ""));
}

fn state_with_user() -> AuthState {
    let mut s = AuthState::default();
    let mut i = 0;
    let mut apply = |s: &mut AuthState, cmd: AuthCommand| {
        i += 1;
        s.apply("", &cmd, i)
    };
    apply(
        &mut s,
        AuthCommand::UserAdd {
            name: "root".into(),
            password_hash: Bytes::from_static(b"h"),
            no_password: false,
        },
    )
    .unwrap();
    apply(
        &mut s,
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
    )
    .unwrap();
    apply(
        &mut s,
        AuthCommand::UserAdd {
            name: "u".into(),
            password_hash: Bytes::from_static(b"h2"),
            no_password: false,
        },
    )
    .unwrap();
    apply(&mut s, AuthCommand::RoleAdd { name: "r".into() }).unwrap();
    apply(
        &mut s,
        AuthCommand::RoleGrantPermission {
            name: "r".into(),
            permission: perm(PermType::READWRITE, "k", ""),
        },
    )
    .unwrap();
    apply(
        &mut s,
        AuthCommand::RoleGrantPermission {
            name: "r".into(),
            permission: perm(PermType::READ, "p/", "p0"),
        },
    )
    .unwrap();
    apply(
        &mut s,
        AuthCommand::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
    )
    .unwrap();
    s
}

#[test]
fn rules_and_errors_as_etcd() {
    let mut s = state_with_user();
    // 1 at the start, then 7 changes.
    assert_eq!(s.revision, 8);
    let mut next = s.last_index;
    let mut apply = |s: &mut AuthState, by: &str, cmd: AuthCommand| {
        next += 1;
        s.apply(by, &cmd, next)
    };
    // Disabled: anyone may change anything.
    assert_eq!(
        apply(&mut s, "", AuthCommand::RoleAdd { name: "r".into() }),
        Err(AuthError::RoleAlreadyExist)
    );
    assert_eq!(
        apply(&mut s, "", AuthCommand::RoleAdd { name: "".into() }),
        Err(AuthError::RoleEmpty)
    );
    assert_eq!(
        apply(
            &mut s,
            "",
            AuthCommand::UserGrantRole {
                user: "nobody".into(),
                role: "r".into()
            }
        ),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        apply(
            &mut s,
            "",
            AuthCommand::UserGrantRole {
                user: "u".into(),
                role: "nope".into()
            }
        ),
        Err(AuthError::RoleNotFound)
    );
    // Granting a role already held answers success and changes nothing.
    let rev = s.revision;
    assert_eq!(
        apply(
            &mut s,
            "",
            AuthCommand::UserGrantRole {
                user: "u".into(),
                role: "r".into()
            }
        ),
        Ok(AuthAnswer::Done)
    );
    assert_eq!(s.revision, rev);
    assert_eq!(
        apply(
            &mut s,
            "",
            AuthCommand::Authenticate {
                name: "u".into(),
                token_prefix: "abc".into()
            }
        ),
        Err(AuthError::AuthNotEnabled)
    );
    assert_eq!(apply(&mut s, "", AuthCommand::Enable), Ok(AuthAnswer::Done));
    assert!(s.enabled);
    // Enabled: changes need root.
    assert_eq!(
        apply(&mut s, "", AuthCommand::RoleAdd { name: "x".into() }),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(
        apply(&mut s, "u", AuthCommand::RoleAdd { name: "x".into() }),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        apply(&mut s, "ghost", AuthCommand::RoleAdd { name: "x".into() }),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        apply(
            &mut s,
            "root",
            AuthCommand::UserDelete {
                name: "root".into()
            }
        ),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        apply(
            &mut s,
            "root",
            AuthCommand::RoleDelete {
                name: "root".into()
            }
        ),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        apply(
            &mut s,
            "root",
            AuthCommand::UserRevokeRole {
                name: "root".into(),
                role: "root".into()
            }
        ),
        Err(AuthError::InvalidAuthMgmt)
    );
    let answer = apply(
        &mut s,
        "",
        AuthCommand::Authenticate {
            name: "u".into(),
            token_prefix: "abc".into(),
        },
    );
    // The token is the prefix and the entry's index.
    assert_eq!(
        answer,
        Ok(AuthAnswer::Token(format!("abc.{}", s.last_index)))
    );
    // Permission checks.
    assert_eq!(
        s.check(None, b"k", b"", PermType::READ),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(s.check(Some("u"), b"k", b"", PermType::WRITE), Ok(()));
    assert_eq!(s.check(Some("u"), b"p/1", b"", PermType::READ), Ok(()));
    assert_eq!(
        s.check(Some("u"), b"p/1", b"", PermType::WRITE),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check(Some("ghost"), b"k", b"", PermType::READ),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check(Some("root"), b"any", b"\0", PermType::WRITE),
        Ok(())
    );
    // Revoking and deleting.
    assert_eq!(
        apply(
            &mut s,
            "root",
            AuthCommand::RoleRevokePermission {
                name: "r".into(),
                key: Bytes::from_static(b"p/"),
                range_end: Bytes::from_static(b"p1"),
            }
        ),
        Err(AuthError::PermissionNotGranted)
    );
    apply(
        &mut s,
        "root",
        AuthCommand::RoleRevokePermission {
            name: "r".into(),
            key: Bytes::from_static(b"p/"),
            range_end: Bytes::from_static(b"p0"),
        },
    )
    .unwrap();
    assert_eq!(
        s.check(Some("u"), b"p/1", b"", PermType::READ),
        Err(AuthError::PermissionDenied)
    );
    apply(&mut s, "root", AuthCommand::RoleDelete { name: "r".into() }).unwrap();
    assert!(s.users["u"].roles.is_empty());
    assert_eq!(
        apply(
            &mut s,
            "root",
            AuthCommand::UserRevokeRole {
                name: "u".into(),
                role: "r".into()
            }
        ),
        Err(AuthError::RoleNotGranted)
    );
    let rev = s.revision;
    apply(&mut s, "root", AuthCommand::Disable).unwrap();
    assert!(!s.enabled);
    assert_eq!(s.revision, rev + 1);
    // An entry at or below the last one applied changes nothing.
    let before = s.clone();
    assert_eq!(
        s.apply(
            "",
            &AuthCommand::RoleAdd {
                name: "late".into()
            },
            3
        ),
        Ok(AuthAnswer::Done)
    );
    assert_eq!(s, before);
}

#[test]
fn enable_needs_root_with_root_role() {
    let mut s = AuthState::default();
    assert_eq!(
        s.apply("", &AuthCommand::Enable, 1),
        Err(AuthError::RootUserNotExist)
    );
    s.apply(
        "",
        &AuthCommand::UserAdd {
            name: "root".into(),
            password_hash: Bytes::new(),
            no_password: false,
        },
        2,
    )
    .unwrap();
    assert_eq!(
        s.apply("", &AuthCommand::Enable, 3),
        Err(AuthError::RootRoleNotExist)
    );
    s.apply(
        "",
        &AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        4,
    )
    .unwrap();
    assert_eq!(s.apply("", &AuthCommand::Enable, 5), Ok(AuthAnswer::Done));
}

#[test]
fn grant_permission_updates_in_place_or_inserts_sorted() {
    let mut s = AuthState::default();
    s.apply("", &AuthCommand::RoleAdd { name: "r".into() }, 1)
        .unwrap();
    for (i, (k, e, t)) in [
        ("m", "", PermType::READ),
        ("a", "c", PermType::READ),
        ("m", "n", PermType::WRITE),
        ("m", "", PermType::READWRITE),
    ]
    .into_iter()
    .enumerate()
    {
        s.apply(
            "",
            &AuthCommand::RoleGrantPermission {
                name: "r".into(),
                permission: perm(t, k, e),
            },
            2 + i as u64,
        )
        .unwrap();
    }
    assert_eq!(
        s.roles["r"].permissions,
        vec![
            perm(PermType::READ, "a", "c"),
            perm(PermType::READWRITE, "m", ""),
            perm(PermType::WRITE, "m", "n"),
        ]
    );
}

#[test]
fn state_commands_and_outcomes_round_trip() {
    let s = state_with_user();
    let mut bytes = Vec::new();
    s.encode(&mut bytes);
    let len = bytes.len();
    bytes.extend_from_slice(b"tail");
    assert_eq!(AuthState::decode(&bytes), Some((s, len)));
    for cut in 0..len {
        assert_eq!(AuthState::decode(&bytes[..cut]), None, "cut at {cut}");
    }
    for outcome in [
        Ok(AuthAnswer::Done),
        Ok(AuthAnswer::Token("abc.9".into())),
        Err(AuthError::AuthOldRevision),
        Err(AuthError::RootUserNotExist),
    ] {
        let mut out = Vec::new();
        put_outcome(&mut out, &outcome);
        let buf = Bytes::from(out);
        let mut r = Reader { buf: &buf, at: 0 };
        assert_eq!(read_outcome(&mut r), Ok(outcome));
        assert_eq!(r.at, buf.len());
    }
    for e in ERRORS {
        assert_eq!(AuthError::from_code(e.code()), Some(e));
    }
}

#[tokio::test]
async fn tokens_are_registered_refreshed_and_dropped() {
    let node = NodeAuth::default();
    let mut state = state_with_user();
    state.enabled = true;
    let last = state.last_index;
    node.replace(state);
    let t = node.apply(
        "",
        &AuthCommand::Authenticate {
            name: "u".into(),
            token_prefix: "abcdefghijklmnop".into(),
        },
        last + 1,
    );
    let Ok(AuthAnswer::Token(token)) = t else {
        panic!("{t:?}");
    };
    let wait = Duration::from_millis(50);
    assert_eq!(node.token_user(&token, wait).await.as_deref(), Some("u"));
    assert_eq!(node.token_user("abcdefghijklmnop", wait).await, None);
    assert_eq!(node.token_user("x.y", wait).await, None);
    // An entry not applied yet is waited for, then the token is unknown.
    assert_eq!(node.token_user("zz.99999", wait).await, None);
    // Changing the password drops the user's tokens.
    node.apply(
        "root",
        &AuthCommand::UserChangePassword {
            name: "u".into(),
            password_hash: Bytes::from_static(b"new"),
        },
        last + 2,
    )
    .unwrap();
    assert_eq!(node.token_user(&token, wait).await, None);
    // A token lapses after its time to live.
    node.set_token_ttl(Duration::from_millis(30));
    let Ok(AuthAnswer::Token(short)) = node.apply(
        "",
        &AuthCommand::Authenticate {
            name: "u".into(),
            token_prefix: "q".into(),
        },
        last + 3,
    ) else {
        panic!()
    };
    assert!(node.token_user(&short, wait).await.is_some());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(node.token_user(&short, wait).await, None);
}

#[tokio::test]
async fn with_jwts_no_simple_token_is_registered_and_revisions_are_awaited() {
    let node = std::sync::Arc::new(NodeAuth::default());
    node.set_simple_tokens(false);
    let mut state = state_with_user();
    state.enabled = true;
    let last = state.last_index;
    let revision = state.revision;
    node.replace(state);
    let t = node.apply(
        "",
        &AuthCommand::Authenticate {
            name: "u".into(),
            token_prefix: "abcdefghijklmnop".into(),
        },
        last + 1,
    );
    let Ok(AuthAnswer::Token(token)) = t else {
        panic!("{t:?}");
    };
    let wait = Duration::from_millis(50);
    assert_eq!(node.token_user(&token, wait).await, None);
    // The revision reached already, one never reached, and one a later change reaches.
    assert!(node.wait_auth_revision(revision, wait).await);
    assert!(!node.wait_auth_revision(revision + 1, wait).await);
    let waiter = {
        let node = node.clone();
        tokio::spawn(async move {
            node.wait_auth_revision(revision + 1, Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    node.apply(
        "root",
        &AuthCommand::RoleAdd {
            name: "another".into(),
        },
        last + 2,
    )
    .unwrap();
    assert!(waiter.await.unwrap());
}
