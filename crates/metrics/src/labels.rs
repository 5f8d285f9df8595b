//! Label sets shared by the daemons. A function or container id is encoded
//! straight from its 16 bytes, so recording a request allocates nothing.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// A uuid as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Id(pub uuid::Uuid);

impl EncodeLabelValue for Id {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buf = uuid::Uuid::encode_buffer();
        std::fmt::Write::write_str(encoder, self.0.hyphenated().encode_lower(&mut buf))
    }
}

/// `{function}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: Id,
}

/// `{function, code}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionCode {
    pub function: Id,
    pub code: u16,
}
