//! The codec of every yrd-mesh service: prost's encoding and decoding, but
//! with a decoding failure reported as the fault of the side that sent the
//! message. A request a server cannot decode is the caller's mistake
//! (`INVALID_ARGUMENT`, naming that the request could not be decoded); a
//! response a client cannot decode is not (`INTERNAL`, as tonic has it).
//!
//! tonic's own prost codec answers `INTERNAL` in both cases, and one codec
//! serves both sides, so the codec cannot tell them apart by itself. The
//! type can: the build script generates a [`Exchanged`] impl for every
//! input and output message of the protocol's services (no message is
//! both; the build fails if one becomes so), and the decoder asks it.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Which way a message travels in the protocol's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: a method's input.
    Request,
    /// Server to client: a method's output.
    Response,
}

/// A message that is a method's input or output (never both); generated
/// for every one by the build script.
pub trait Exchanged {
    /// Which way it travels.
    const DIRECTION: Direction;
}

include!(concat!(env!("OUT_DIR"), "/yrd_exchanged.rs"));

/// The codec the generated clients and servers use (`codec_path` in the
/// build script): encodes `T`, decodes `U`.
#[derive(Debug, Clone)]
pub struct MeshCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for MeshCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for MeshCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Exchanged + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MeshDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MeshDecoder { _type: PhantomData }
    }
}

/// Decodes `U` with prost; see the module docs for the status of a failure.
#[derive(Debug, Clone)]
pub struct MeshDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default + Exchanged> Decoder for MeshDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(decode_failure::<U>)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The status of a message of type `U` that could not be decoded. prost's
/// error names the message and field and what was wrong with the bytes,
/// never their value.
fn decode_failure<U: Exchanged>(e: prost::DecodeError) -> Status {
    match U::DIRECTION {
        Direction::Request => Status::invalid_argument(format!("the request could not be decoded: {e}")),
        Direction::Response => Status::internal(format!("the response could not be decoded: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{QueryRequest, QueryResponse};

    #[test]
    fn requests_and_responses_are_told_apart() {
        assert_eq!(QueryRequest::DIRECTION, Direction::Request);
        assert_eq!(QueryResponse::DIRECTION, Direction::Response);
        assert_eq!(crate::mesh::NodeQueryRequest::DIRECTION, Direction::Request);
        assert_eq!(crate::mesh::Catalog::DIRECTION, Direction::Response);
    }

    #[test]
    fn a_bad_request_is_invalid_argument_and_a_bad_response_internal() {
        // Field 1 with wire type 7, which does not exist.
        let garbage = [0x0fu8, 0x0f];
        let err = QueryRequest::decode(&garbage[..]).unwrap_err();
        let status = decode_failure::<QueryRequest>(err.clone());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("the request could not be decoded: "),
            "{status:?}"
        );
        let status = decode_failure::<QueryResponse>(err);
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
