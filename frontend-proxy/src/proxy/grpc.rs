//! What tells a gRPC request, shared by the lifecycle (which marks the
//! request) and the local replies (which answer it as gRPC).

use http::header;

/// Whether a request is gRPC, as Envoy tells (`Grpc::Common::isGrpcRequestHeaders`).
pub fn is_grpc(req: &pingora_http::RequestHeader) -> bool {
    req.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}
