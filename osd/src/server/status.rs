//! The edge between [`OsdError`] and gRPC statuses, both ways: what this OSD
//! answers, and what it makes of a peer's answer. The only place in the OSD that
//! looks at a status code.

use tonic::{Code, Status};

use crate::error::OsdError;

/// Metadata key carrying the replying OSD's map epoch on a stale-epoch refusal.
pub const EPOCH_HEADER: &str = "lcpfs-epoch";

impl From<OsdError> for Status {
    fn from(error: OsdError) -> Self {
        match error {
            OsdError::Invalid(message) => Status::invalid_argument(message),
            OsdError::NotFound(message) => Status::not_found(message),
            error @ OsdError::NoObject(_) => Status::not_found(error.to_string()),
            OsdError::AlreadyExists(message) => Status::already_exists(message),
            OsdError::Stale { message, epoch } => {
                let mut status = Status::failed_precondition(message);
                if let Ok(value) = epoch.to_string().parse() {
                    status.metadata_mut().insert(EPOCH_HEADER, value);
                }
                status
            }
            OsdError::Unavailable(message) => Status::unavailable(message),
            OsdError::Behind(message) => Status::out_of_range(message),
            OsdError::Diverged(message) => Status::aborted(message),
            OsdError::Full(message) => Status::resource_exhausted(message),
            OsdError::DataLoss(message) => Status::data_loss(message),
            OsdError::PermissionDenied(message) => Status::permission_denied(message),
            OsdError::Internal(message) => Status::internal(message),
        }
    }
}

impl From<Status> for OsdError {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => OsdError::Invalid(message),
            Code::NotFound => OsdError::NotFound(message),
            Code::AlreadyExists => OsdError::AlreadyExists(message),
            Code::FailedPrecondition => OsdError::Stale {
                message,
                epoch: status
                    .metadata()
                    .get(EPOCH_HEADER)
                    .and_then(|value| value.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
            },
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                OsdError::Unavailable(message)
            }
            Code::OutOfRange => OsdError::Behind(message),
            Code::Aborted => OsdError::Diverged(message),
            Code::ResourceExhausted => OsdError::Full(message),
            Code::DataLoss => OsdError::DataLoss(message),
            Code::PermissionDenied | Code::Unauthenticated => OsdError::PermissionDenied(message),
            _ => OsdError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_a_round_trip_through_a_peer() {
        let errors = [
            OsdError::Invalid("a".into()),
            OsdError::NotFound("b".into()),
            OsdError::AlreadyExists("c".into()),
            OsdError::Stale {
                message: "d".into(),
                epoch: 42,
            },
            OsdError::Unavailable("e".into()),
            OsdError::Behind("f".into()),
            OsdError::Diverged("g".into()),
            OsdError::Full("h".into()),
            OsdError::DataLoss("i".into()),
            OsdError::PermissionDenied("j".into()),
            OsdError::Internal("k".into()),
        ];
        for error in errors {
            let back = OsdError::from(Status::from(error.clone()));
            assert_eq!(format!("{back:?}"), format!("{error:?}"));
        }
        let missing = OsdError::from(Status::from(OsdError::NoObject(b"x".to_vec())));
        assert!(matches!(missing, OsdError::NotFound(message) if message.contains("'x'")));
    }
}
