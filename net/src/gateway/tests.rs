//! The gateway's JSON handling, without a server: request decoding as etcd's gateway does it,
//! the JSON form of answers, and error bodies.

use ballast_proto::etcdserverpb as pb;
use ballast_proto::mvccpb;
use bytes::Bytes;

use super::*;

fn body_text(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let bytes = runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .expect("body");
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

#[test]
fn requests_take_proto_names_json_names_and_integers_as_strings_or_numbers() {
    let text = br#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":"2","revision":3,"sort_order":"DESCEND","bogus":1} "#;
    let Parsed::Value(value, used) = next_value(text) else {
        panic!("a whole request");
    };
    assert_eq!(used, text.len() - 1);
    let req: pb::RangeRequest = to_request(value).unwrap();
    assert_eq!(req.key, Bytes::from_static(b"foo"));
    assert_eq!(req.range_end, Bytes::from_static(b"fop"));
    assert_eq!(req.limit, 2);
    assert_eq!(req.revision, 3);
    assert_eq!(req.sort_order, pb::range_request::SortOrder::Descend as i32);

    let Parsed::Value(value, _) = next_value(br#"{"TTL":"60","ID":7}"#) else {
        panic!("a whole request");
    };
    let grant: pb::LeaseGrantRequest = to_request(value).unwrap();
    assert_eq!((grant.ttl, grant.id), (60, 7));
}

#[test]
fn a_cut_off_body_is_incomplete_and_a_wrong_one_invalid() {
    assert!(matches!(
        next_value(br#"{"key":"Zm9v""#),
        Parsed::Incomplete
    ));
    assert!(matches!(next_value(b"  \n"), Parsed::Incomplete));
    assert!(matches!(next_value(b"{\"key\":}"), Parsed::Invalid(_)));
    let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert!(to_request::<pb::RangeRequest>(value(r#"{"key":123}"#)).is_err());
    assert!(to_request::<pb::RangeRequest>(value(r#"{"sort_order":"SIDEWAYS"}"#)).is_err());
}

#[test]
fn null_fields_are_absent_and_a_null_request_is_the_default() {
    let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let req: pb::RangeRequest = to_request(value(r#"{"key":null,"limit":"3"}"#)).unwrap();
    assert!(req.key.is_empty());
    assert_eq!(req.limit, 3);
    let txn: pb::TxnRequest = to_request(value(
        r#"{"success":[{"request_put":{"key":"YQ==","value":null}}]}"#,
    ))
    .unwrap();
    assert_eq!(txn.success.len(), 1);
    let req: pb::RangeRequest = to_request(serde_json::Value::Null).unwrap();
    assert_eq!(req, pb::RangeRequest::default());
}

#[test]
fn answers_use_proto_names_strings_for_64_bit_integers_and_leave_defaults_out() {
    let resp = pb::RangeResponse {
        header: Some(pb::ResponseHeader {
            cluster_id: u64::MAX,
            member_id: 1,
            revision: 3,
            raft_term: 0,
        }),
        kvs: vec![mvccpb::KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: Bytes::new(),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    assert_eq!(
        serde_json::to_string(&resp).unwrap(),
        r#"{"header":{"cluster_id":"18446744073709551615","member_id":"1","revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2"}],"count":"1"}"#
    );
    let ttl = pb::LeaseTimeToLiveResponse {
        header: None,
        id: 5,
        ttl: -1,
        granted_ttl: 0,
        keys: Vec::new(),
    };
    assert_eq!(
        serde_json::to_string(&ttl).unwrap(),
        r#"{"ID":"5","TTL":"-1"}"#
    );
    let event = mvccpb::Event {
        r#type: mvccpb::event::EventType::Delete as i32,
        kv: None,
        prev_kv: None,
    };
    assert_eq!(
        serde_json::to_string(&event).unwrap(),
        r#"{"type":"DELETE"}"#
    );
}

#[test]
fn errors_carry_the_message_twice_and_the_code_with_grpc_gateways_http_status() {
    let (status, body) = body_text(error_response(&Status::failed_precondition(
        "etcdserver: lease already exists",
    )));
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        body,
        r#"{"error":"etcdserver: lease already exists","message":"etcdserver: lease already exists","code":9}"#
    );
    let (status, body) = body_text(error_response(&Status::not_found("a \"quoted\" name")));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        r#"{"error":"a \"quoted\" name","message":"a \"quoted\" name","code":5}"#
    );
    assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
    assert_eq!(
        http_status(Code::Unknown),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        http_status(Code::Unimplemented),
        StatusCode::NOT_IMPLEMENTED
    );
}

#[test]
fn stream_lines_wrap_each_answer_and_an_error() {
    let resp = pb::LeaseKeepAliveResponse {
        header: None,
        id: 7,
        ttl: 30,
    };
    assert_eq!(
        result_line(&resp),
        Bytes::from_static(b"{\"result\":{\"ID\":\"7\",\"TTL\":\"30\"}}\n")
    );
    assert_eq!(
        stream_error_line(&Status::unavailable("etcdserver: no leader")),
        Bytes::from_static(
            b"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\",\"http_status\":\"Service Unavailable\"}}\n"
        )
    );
}

/// A body that arrives in pieces, cut anywhere, yields the same requests, then the end; a
/// request that does not decode is an error with code 2.
#[test]
fn a_stream_body_is_read_as_its_requests_arrive() {
    let text = br#"{"create_request":{"key":"YQ=="}} {"cancel_request":{"watch_id":"0"}}{"progress_request":{}}"#;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for cut in [1, 7, 33, 34, 60, text.len()] {
        let chunks: Vec<Result<Bytes, Infallible>> = text
            .chunks(cut)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let mut reader = JsonReader::new(body.into_data_stream(), 1 << 20);
        let requests: Vec<pb::WatchRequest> = runtime.block_on(async {
            let mut out = Vec::new();
            while let Some(req) = reader.next::<pb::WatchRequest>().await.expect("decodes") {
                out.push(req);
            }
            out
        });
        assert_eq!(requests.len(), 3, "cut every {cut} bytes");
        assert!(matches!(
            requests[1].request_union,
            Some(pb::watch_request::RequestUnion::CancelRequest(_))
        ));
    }

    let body = Body::from(r#"{"create_request":{"key":"YQ=="}}{"create_"#);
    let mut reader = JsonReader::new(body.into_data_stream(), 1 << 20);
    runtime.block_on(async {
        assert!(reader.next::<pb::WatchRequest>().await.unwrap().is_some());
        let err = reader.next::<pb::WatchRequest>().await.unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(err.message(), "unexpected EOF");
    });
}

#[test]
fn a_frame_is_what_a_grpc_decoder_reads() {
    let req = pb::LeaseKeepAliveRequest { id: 42 };
    let frame = grpc_frame(&req);
    assert_eq!(frame[0], 0);
    let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 5);
    let decoded = <pb::LeaseKeepAliveRequest as prost::Message>::decode(&frame[5..]).unwrap();
    assert_eq!(decoded.id, 42);
}
