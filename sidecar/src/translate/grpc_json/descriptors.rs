//! Where the API is learnt: `.proto` files compiled at load by protox
//! (`google/api/{annotations,http}.proto` embedded, well-known types from
//! protox, then the include paths), a `FileDescriptorSet` file, or gRPC
//! server reflection (v1, falling back to v1alpha) asked of the upstream
//! through the layers below this one, at first use.
//!
//! The pool is always decoded from `FileDescriptorSet` bytes, so method
//! options keep the `google.api.http` extension readable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::{Request, Uri, Version};
use http_body_util::{BodyExt, Limited};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use tower::ServiceExt;

use super::status::GrpcStatus;
use super::stream::FrameDecoder;
use crate::http::{full, Body, HttpService};

/// The embedded `google/api` protos.
const EMBEDDED: [(&str, &str); 2] = [
    (
        "google/api/annotations.proto",
        include_str!("google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("google/api/http.proto"),
    ),
];

/// Serves the embedded `google/api` protos to protox.
struct EmbeddedResolver;

impl FileResolver for EmbeddedResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match EMBEDDED.iter().find(|(embedded, _)| *embedded == name) {
            Some((name, source)) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The resolver chain: embedded, the include paths, the well-known types.
fn resolver(includes: &[std::path::PathBuf]) -> ChainFileResolver {
    let mut chain = ChainFileResolver::new();
    chain.add(EmbeddedResolver);
    for include in includes {
        chain.add(IncludeFileResolver::new(include.clone()));
    }
    chain.add(GoogleFileResolver::new());
    chain
}

/// Compiles `.proto` files; the error of each file that fails, by index.
pub fn compile(
    protos: &[String],
    includes: &[std::path::PathBuf],
) -> Result<DescriptorPool, Vec<(usize, String)>> {
    let mut compiler = protox::Compiler::with_file_resolver(resolver(includes));
    compiler.include_imports(true);
    let mut errors = Vec::new();
    for (i, proto) in protos.iter().enumerate() {
        if let Err(err) = compiler.open_file(proto) {
            errors.push((i, err.to_string()));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
        .map_err(|e| vec![(0, e.to_string())])
}

/// Reads a binary `FileDescriptorSet`.
pub fn read_set(path: &Path) -> Result<DescriptorPool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    DescriptorPool::decode(bytes.as_slice())
        .map_err(|e| format!("{} is not a FileDescriptorSet: {e}", path.display()))
}

/// `grpc.reflection.v1(alpha).ServerReflectionRequest` (the oneof flattened).
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(string, optional, tag = "3")]
    file_by_filename: Option<String>,
    #[prost(string, optional, tag = "4")]
    file_containing_symbol: Option<String>,
    #[prost(string, optional, tag = "7")]
    list_services: Option<String>,
}

/// `ServerReflectionResponse` (the parts read).
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionResponse {
    #[prost(message, optional, tag = "4")]
    file_descriptor_response: Option<FileDescriptorResponse>,
    #[prost(message, optional, tag = "6")]
    list_services_response: Option<ListServiceResponse>,
    #[prost(message, optional, tag = "7")]
    error_response: Option<ErrorResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The reflection services, newest first.
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Largest reflection answer read.
const MAX_REFLECTION_BYTES: usize = 16 << 20;

/// Rounds of asking for missing imports.
const MAX_IMPORT_ROUNDS: usize = 8;

/// A reflection client over the layers below (the request's route and
/// upstream), modelled on the request that triggered it.
pub struct Reflector<'a> {
    /// The service below this layer.
    pub inner: HttpService,
    /// The triggering request's parts (URI, `Host`, extensions).
    pub template: &'a http::request::Parts,
}

impl Reflector<'_> {
    /// The services' descriptors as a pool.
    pub async fn fetch(&self) -> Result<DescriptorPool, String> {
        let mut last = String::new();
        for path in REFLECTION_PATHS {
            match self.fetch_with(path).await {
                Ok(pool) => return Ok(pool),
                Err(Fallback::Next(err)) => last = err,
                Err(Fallback::Stop(err)) => return Err(err),
            }
        }
        Err(last)
    }

    async fn fetch_with(&self, path: &str) -> Result<DescriptorPool, Fallback> {
        let listed = self.call(path, &[list_services()]).await?;
        let services: Vec<String> = listed
            .iter()
            .filter_map(|r| r.list_services_response.as_ref())
            .flat_map(|l| l.service.iter().map(|s| s.name.clone()))
            .filter(|name| !name.starts_with("grpc.reflection."))
            .collect();
        if services.is_empty() {
            return Err(Fallback::Stop(
                "the upstream's reflection lists no service".into(),
            ));
        }
        let asks: Vec<ReflectionRequest> = services
            .iter()
            .map(|s| ReflectionRequest {
                file_containing_symbol: Some(s.clone()),
                ..Default::default()
            })
            .collect();
        let mut files = BTreeMap::new();
        add_files(
            &mut files,
            &self.call(path, &asks).await.map_err(Fallback::stop)?,
        )?;
        for _ in 0..MAX_IMPORT_ROUNDS {
            let missing = missing_imports(&files);
            if missing.is_empty() {
                break;
            }
            let mut asks = Vec::new();
            for name in missing {
                match local_file(&name) {
                    Some(bytes) => {
                        files.insert(name, bytes);
                    }
                    None => asks.push(ReflectionRequest {
                        file_by_filename: Some(name),
                        ..Default::default()
                    }),
                }
            }
            if !asks.is_empty() {
                add_files(
                    &mut files,
                    &self.call(path, &asks).await.map_err(Fallback::stop)?,
                )?;
            }
        }
        let mut set = BytesMut::new();
        for bytes in files.values() {
            prost::encoding::bytes::encode(1, bytes, &mut set);
        }
        DescriptorPool::decode(set.freeze())
            .map_err(|e| Fallback::Stop(format!("reflection gave invalid descriptors: {e}")))
    }

    /// One reflection stream: every request sent, every answer read.
    async fn call(
        &self,
        path: &str,
        asks: &[ReflectionRequest],
    ) -> Result<Vec<ReflectionResponse>, Fallback> {
        let mut body = BytesMut::new();
        for ask in asks {
            let bytes = ask.encode_to_vec();
            body.put_u8(0);
            body.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            body.put_slice(&bytes);
        }
        let request = self.request(path, body.freeze()).map_err(Fallback::Stop)?;
        let response = self
            .inner
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| Fallback::Stop(format!("reflection call failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let pool = DescriptorPool::new();
        if let Some(status) = GrpcStatus::from_headers(&parts.headers, &pool) {
            if status.code != 0 {
                return Err(Fallback::from_status(&status));
            }
        }
        if !crate::http::is_grpc(&parts.headers) {
            return Err(Fallback::Next(format!(
                "reflection answered HTTP {} without gRPC",
                parts.status
            )));
        }
        let collected = Limited::new(body, MAX_REFLECTION_BYTES)
            .collect()
            .await
            .map_err(|e| Fallback::Stop(format!("reflection answer failed: {e}")))?;
        if let Some(status) = collected
            .trailers()
            .and_then(|t| GrpcStatus::from_headers(t, &pool))
        {
            if status.code != 0 {
                return Err(Fallback::from_status(&status));
            }
        }
        let mut decoder = FrameDecoder::default();
        decoder.push(&collected.to_bytes());
        let mut out = Vec::new();
        while let Some(payload) = decoder
            .next_message()
            .map_err(|e| Fallback::Stop(e.0.into()))?
        {
            out.push(
                ReflectionResponse::decode(payload)
                    .map_err(|e| Fallback::Stop(format!("undecodable reflection answer: {e}")))?,
            );
        }
        Ok(out)
    }

    fn request(&self, path: &str, body: Bytes) -> Result<Request<Body>, String> {
        let mut uri = self.template.uri.clone().into_parts();
        uri.path_and_query = Some(
            path.parse()
                .map_err(|_| "invalid reflection path".to_string())?,
        );
        let uri = Uri::from_parts(uri).map_err(|e| e.to_string())?;
        let mut request = Request::new(full(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.extensions_mut() = self.template.extensions.clone();
        let headers = request.headers_mut();
        if let Some(host) = self.template.headers.get(http::header::HOST) {
            headers.insert(http::header::HOST, host.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        Ok(request)
    }
}

/// Whether a failed reflection attempt should try v1alpha.
enum Fallback {
    Next(String),
    Stop(String),
}

impl Fallback {
    fn stop(self) -> Fallback {
        match self {
            Fallback::Next(e) | Fallback::Stop(e) => Fallback::Stop(e),
        }
    }

    fn from_status(status: &GrpcStatus) -> Fallback {
        let text = format!(
            "reflection failed: gRPC status {} {}",
            status.code, status.message
        );
        if status.code == 12 {
            Fallback::Next(text)
        } else {
            Fallback::Stop(text)
        }
    }
}

fn list_services() -> ReflectionRequest {
    ReflectionRequest {
        list_services: Some(String::new()),
        ..Default::default()
    }
}

/// Adds the files of the answers (by name); an error answer fails.
fn add_files(
    files: &mut BTreeMap<String, Vec<u8>>,
    answers: &[ReflectionResponse],
) -> Result<(), Fallback> {
    for answer in answers {
        if let Some(err) = &answer.error_response {
            return Err(Fallback::Stop(format!(
                "reflection refused: {} ({})",
                err.error_message, err.error_code
            )));
        }
        for bytes in answer
            .file_descriptor_response
            .iter()
            .flat_map(|r| &r.file_descriptor_proto)
        {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| Fallback::Stop(format!("undecodable file descriptor: {e}")))?;
            files.insert(file.name().to_string(), bytes.clone());
        }
    }
    Ok(())
}

/// Imports named by the files but not among them.
fn missing_imports(files: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    files
        .values()
        .filter_map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok())
        .flat_map(|file| file.dependency)
        .filter(|dep| !files.contains_key(dep))
        .collect()
}

/// A well-known or embedded file, compiled here rather than asked for.
fn local_file(name: &str) -> Option<Vec<u8>> {
    if !name.starts_with("google/protobuf/") && !EMBEDDED.iter().any(|(n, _)| *n == name) {
        return None;
    }
    let mut compiler = protox::Compiler::with_file_resolver(resolver(&[]));
    compiler.open_file(name).ok()?;
    compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .find(|f| f.name() == name)
        .map(|f| f.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_google_api_protos_compile_with_their_extension() {
        let dir = std::env::temp_dir().join(format!("grpc-json-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("x")).unwrap();
        std::fs::write(
            dir.join("x/a.proto"),
            "syntax = \"proto3\"; package x; import \"google/api/annotations.proto\";\n\
             message M { string name = 1; }\n\
             service S { rpc Get(M) returns (M) { option (google.api.http) = { get: \"/v1/{name}\" }; } }\n",
        )
        .unwrap();
        let pool = compile(&["x/a.proto".into()], std::slice::from_ref(&dir)).unwrap();
        let ext = pool.get_extension_by_name("google.api.http").unwrap();
        let method = pool
            .get_service_by_name("x.S")
            .unwrap()
            .methods()
            .next()
            .unwrap();
        assert!(method.options().has_extension(&ext));
        let errors = compile(&["x/missing.proto".into()], std::slice::from_ref(&dir)).unwrap_err();
        assert_eq!(errors[0].0, 0);
        assert!(local_file("google/protobuf/empty.proto").is_some());
        assert!(local_file("google/api/http.proto").is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
