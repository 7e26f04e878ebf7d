use super::*;

const MAX: usize = 1 << 16;

fn request() -> HeaderMap {
    let mut m = HeaderMap::with_capacity(8);
    m.push_pseudo(Pseudo::Authority, HeaderValue::from_static("example.com"));
    m.push_pseudo(Pseudo::Path, HeaderValue::from_static("/a"));
    m.push_pseudo(Pseudo::Method, HeaderValue::from_static("GET"));
    m.push(
        HeaderName::from_static("accept"),
        HeaderValue::from_static("*/*"),
    );
    m.push(
        HeaderName::from_static("x-multi"),
        HeaderValue::from_static("1"),
    );
    m.push(
        HeaderName::from_static("x-multi"),
        HeaderValue::from_static("2"),
    );
    m
}

fn names(m: &HeaderMap) -> Vec<String> {
    m.pairs()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect()
}

#[test]
fn get_ignores_case_and_returns_first_value() {
    let m = request();
    assert_eq!(m.get(b"X-Multi").unwrap(), "1");
    assert_eq!(m.get(b":path").unwrap(), "/a");
    assert!(m.get(b"missing").is_none());
    assert!(!m.is_modified());
}

#[test]
fn add_appends_and_lowercases() {
    let mut m = request();
    m.add(b"X-New", b"v", MAX).unwrap();
    m.add(b"x-multi", b"3", MAX).unwrap();
    assert_eq!(names(&m)[6..], ["x-new=v", "x-multi=3"]);
    assert_eq!(
        m.edits(),
        &[
            Edit::Append(
                HeaderName::from_static("x-new"),
                HeaderValue::from_static("v")
            ),
            Edit::Append(
                HeaderName::from_static("x-multi"),
                HeaderValue::from_static("3")
            ),
        ]
    );
}

#[test]
fn replace_keeps_position_and_drops_duplicates() {
    let mut m = request();
    m.replace(b"x-multi", b"only", MAX).unwrap();
    assert_eq!(names(&m)[3..], ["accept=*/*", "x-multi=only"]);
    m.replace(b"x-absent", b"v", MAX).unwrap();
    assert_eq!(names(&m).last().unwrap(), "x-absent=v");
}

#[test]
fn remove_removes_every_value_and_missing_is_ok() {
    let mut m = request();
    m.remove(b"X-MULTI").unwrap();
    assert!(m.get(b"x-multi").is_none());
    assert_eq!(m.edits().len(), 1);
    m.remove(b"not-there").unwrap();
    m.remove(b"bad name").unwrap();
    assert_eq!(m.edits().len(), 1, "removing nothing records nothing");
}

#[test]
fn pseudo_headers_are_validated_and_cannot_be_removed() {
    let mut m = request();
    m.replace(b":path", b"/b?q=1", MAX).unwrap();
    assert_eq!(m.pseudo(Pseudo::Path).unwrap(), "/b?q=1");
    assert_eq!(m.edits(), &[Edit::Pseudo(Pseudo::Path)]);
    for bad in [&b"/a b"[..], b"", b"no-slash", b"/a\r\nHost: evil"] {
        assert_eq!(m.replace(b":path", bad, MAX), Err(Status::BadArgument));
    }
    assert_eq!(
        m.replace(b":method", b"G ET", MAX),
        Err(Status::BadArgument)
    );
    assert_eq!(m.replace(b":status", b"20", MAX), Err(Status::BadArgument));
    assert_eq!(m.replace(b":unknown", b"x", MAX), Err(Status::BadArgument));
    assert_eq!(m.remove(b":path"), Err(Status::BadArgument));
    assert_eq!(m.pseudo(Pseudo::Path).unwrap(), "/b?q=1");
}

#[test]
fn injection_attempts_are_refused() {
    let mut m = request();
    for value in [&b"x\r\nX-Injected: 1"[..], b"x\n", b"x\r", b"a\0b"] {
        assert_eq!(m.add(b"x-v", value, MAX), Err(Status::BadArgument));
        assert_eq!(m.replace(b"x-v", value, MAX), Err(Status::BadArgument));
    }
    for name in [&b"x v"[..], b"x\r\nh", b"", b"x:y", b"a\0"] {
        assert_eq!(m.add(name, b"v", MAX), Err(Status::BadArgument));
    }
    assert!(!m.is_modified());
}

#[test]
fn size_cap_applies_to_name_plus_value() {
    let mut m = HeaderMap::default();
    assert_eq!(m.add(b"x", &[b'a'; 10], 10), Err(Status::BadArgument));
    m.add(b"x", &[b'a'; 9], 10).unwrap();
}

#[test]
fn set_all_keeps_missing_pseudo_headers_and_is_atomic() {
    let mut m = request();
    let pairs: [(&[u8], &[u8]); 2] = [(b"one", b"1"), (b":path", b"/new")];
    m.set_all(pairs, MAX).unwrap();
    assert_eq!(
        names(&m),
        [
            ":authority=example.com",
            ":path=/new",
            ":method=GET",
            "one=1"
        ]
    );

    let before = names(&m);
    let bad: [(&[u8], &[u8]); 2] = [(b"two", b"2"), (b"bad\n", b"x")];
    assert_eq!(m.set_all(bad, MAX), Err(Status::BadArgument));
    assert_eq!(names(&m), before);
}

#[test]
fn byte_size_sums_names_and_values() {
    let mut m = HeaderMap::default();
    m.add(b"ab", b"cde", MAX).unwrap();
    m.add(b":status", b"200", MAX).unwrap();
    assert_eq!(m.byte_size(), 2 + 3 + 7 + 3);
    assert_eq!(
        names(&m),
        [":status=200", "ab=cde"],
        "pseudo-headers go first"
    );
}

#[test]
fn byte_size_stays_the_sum_through_every_kind_of_edit() {
    let sum = |m: &HeaderMap| -> usize { m.pairs().map(|(k, v)| k.len() + v.len()).sum() };
    let mut m = request();
    assert_eq!(m.byte_size(), sum(&m));
    type Step = fn(&mut HeaderMap);
    let steps: [(&str, Step); 7] = [
        ("add", |m| m.add(b"x-new", b"value", MAX).unwrap()),
        ("replace one of several", |m| {
            m.replace(b"x-multi", b"three", MAX).unwrap()
        }),
        ("replace a missing name", |m| {
            m.replace(b"x-other", b"v", MAX).unwrap()
        }),
        ("replace a pseudo-header", |m| {
            m.replace(b":path", b"/longer/path", MAX).unwrap()
        }),
        ("add a missing pseudo-header", |m| {
            m.add(b":scheme", b"https", MAX).unwrap()
        }),
        ("remove", |m| m.remove(b"accept").unwrap()),
        ("set all", |m| {
            m.set_all([(&b"a"[..], &b"bc"[..]), (b":method", b"POST")], MAX)
                .unwrap()
        }),
    ];
    for (what, step) in steps {
        step(&mut m);
        assert_eq!(m.byte_size(), sum(&m), "after {what}");
    }
}

const CAPS: MapCaps = MapCaps {
    max_entries: 8,
    max_bytes: 100,
};

#[test]
fn adding_values_one_by_one_stops_at_the_entry_cap() {
    let mut m = request(); // 6 entries
    assert_eq!(m.add_capped(b"x-a", b"1", MAX, CAPS), Ok(()));
    assert_eq!(m.add_capped(b"x-b", b"1", MAX, CAPS), Ok(()));
    assert_eq!(m.len(), 8);
    assert_eq!(
        m.add_capped(b"x-c", b"1", MAX, CAPS),
        Err(Status::BadArgument)
    );
    assert_eq!(m.len(), 8, "a refused add changes nothing");
    // Replacing an existing name or a pseudo-header does not grow the map: still allowed.
    assert_eq!(m.replace_capped(b"x-a", b"2", MAX, CAPS), Ok(()));
    assert_eq!(m.add_capped(b":path", b"/b", MAX, CAPS), Ok(()));
    // A replace of a new name adds an entry: refused.
    assert_eq!(
        m.replace_capped(b"x-new", b"1", MAX, CAPS),
        Err(Status::BadArgument)
    );
    // Replacing the two x-multi values by one frees an entry.
    assert_eq!(m.replace_capped(b"x-multi", b"3", MAX, CAPS), Ok(()));
    assert_eq!(m.add_capped(b"x-c", b"1", MAX, CAPS), Ok(()));
}

#[test]
fn adding_values_stops_at_the_byte_cap() {
    let mut m = request();
    let before = m.byte_size();
    let room = CAPS.max_bytes - before;
    let value = vec![b'v'; room - 3];
    assert_eq!(m.add_capped(b"x-v", &value, MAX, CAPS), Ok(()));
    assert_eq!(m.byte_size(), CAPS.max_bytes);
    assert_eq!(
        m.add_capped(b"x-w", b"", MAX, CAPS),
        Err(Status::BadArgument)
    );
    // A longer value for the same name grows the map: refused; a shorter one shrinks it.
    let longer = vec![b'v'; room - 2];
    assert_eq!(
        m.replace_capped(b"x-v", &longer, MAX, CAPS),
        Err(Status::BadArgument)
    );
    assert_eq!(m.replace_capped(b"x-v", b"short", MAX, CAPS), Ok(()));
    assert_eq!(m.byte_size(), before + 3 + 5);
}

#[test]
fn a_map_that_came_in_over_the_caps_can_still_shrink() {
    let mut m = HeaderMap::default();
    for i in 0..20 {
        m.push(
            HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
    }
    assert_eq!(
        m.add_capped(b"x-more", b"1", MAX, CAPS),
        Err(Status::BadArgument)
    );
    assert_eq!(m.replace_capped(b"x-1", b"2", MAX, CAPS), Ok(()));
    assert_eq!(m.remove(b"x-2"), Ok(()));
    assert_eq!(m.len(), 19);
}

fn response(status: &'static str) -> HeaderMap {
    let mut m = HeaderMap::with_capacity(4);
    m.push_pseudo(Pseudo::Status, HeaderValue::from_static(status));
    m.push(
        HeaderName::from_static("server"),
        HeaderValue::from_static("origin"),
    );
    m
}

/// `:status` takes a final code only (the local-reply rule, 200..=599): an informational code
/// would make the proxy send an interim response and never a final one. Every way of writing
/// it is checked, and a refused write changes nothing.
#[test]
fn status_accepts_only_final_codes() {
    let mut m = response("200");
    for bad in [
        &b"100"[..],
        b"101",
        b"103",
        b"199",
        b"600",
        b"999",
        b"099",
        b"2000",
    ] {
        assert_eq!(m.replace(b":status", bad, MAX), Err(Status::BadArgument));
        assert_eq!(m.add(b":status", bad, MAX), Err(Status::BadArgument));
        let pairs: [(&[u8], &[u8]); 2] = [(b"x", b"1"), (b":status", bad)];
        assert_eq!(m.set_all(pairs, MAX), Err(Status::BadArgument));
        assert_eq!(names(&m), [":status=200", "server=origin"]);
    }
    assert!(!m.is_modified());
    for good in [&b"200"[..], b"204", b"302", b"418", b"503", b"599"] {
        m.replace(b":status", good, MAX).unwrap();
        assert_eq!(m.pseudo(Pseudo::Status).unwrap().as_bytes(), good);
    }
    m.add(b":status", b"201", MAX).unwrap();
    let pairs: [(&[u8], &[u8]); 1] = [(b":status", b"404")];
    m.set_all(pairs, MAX).unwrap();
    assert_eq!(names(&m), [":status=404"]);
}

/// A response that is informational already (an upgrade's 101) may have its status written
/// back unchanged, as a filter that sets every pair it read does; not changed to another 1xx.
#[test]
fn an_informational_status_may_be_kept_but_not_set() {
    let mut m = response("101");
    let pairs: [(&[u8], &[u8]); 2] = [(b":status", b"101"), (b"upgrade", b"websocket")];
    m.set_all(pairs, MAX).unwrap();
    m.replace(b":status", b"101", MAX).unwrap();
    assert_eq!(m.replace(b":status", b"100", MAX), Err(Status::BadArgument));
    m.replace(b":status", b"200", MAX).unwrap();
    assert_eq!(m.replace(b":status", b"101", MAX), Err(Status::BadArgument));
}
