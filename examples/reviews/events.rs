//! The event catalogue of the reviews platform, as code.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};
use uuid::Uuid;

use eventbus::Event;

/// Triggered when the review is created.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("review_created", source = "reviews")]
pub struct ReviewCreated {
    /// The review.
    #[event(subject)]
    pub id: Uuid,
}

/// Triggered when the review is approved by moderators.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("review_approved", deprecated = "use moderate_action", replaced_by = ModerateAction)]
pub struct ReviewApproved {
    /// The review.
    #[event(subject)]
    pub id: Uuid,
}

// On the wire the number (serde_repr); its JSON Schema lists exactly the two
// values (schemars' JsonSchema_repr), so the catalogue shows them.
/// Outcome of a moderation: 1 approved (published), 2 rejected (hidden).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr, schemars::JsonSchema_repr,
)]
#[repr(u8)]
pub enum ModerationStatus {
    /// The object is published.
    Approved = 1,
    /// The object is hidden.
    Rejected = 2,
}

/// Triggered when a moderator approves or rejects an object.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("moderate_action")]
pub struct ModerateAction {
    /// The moderation itself.
    pub action_id: Uuid,
    /// 1 approved, 2 rejected.
    pub status: ModerationStatus,
    /// The moderated model, e.g. `Review`.
    pub model_name: String,
    /// The moderated object.
    #[event(subject)]
    pub id: Uuid,
}

impl From<ReviewApproved> for ModerateAction {
    fn from(old: ReviewApproved) -> Self {
        ModerateAction {
            action_id: Uuid::nil(),
            status: ModerationStatus::Approved,
            model_name: "Review".into(),
            id: old.id,
        }
    }
}

/// Triggered when a record is created.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("record_create")]
pub struct RecordCreate {
    /// The record.
    pub id: Uuid,
    /// Its model, e.g. `Review`.
    pub model_name: String,
}

/// Triggered when a record is changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("record_change")]
pub struct RecordChange {
    /// The record.
    pub id: Uuid,
    /// Its model, e.g. `Review`.
    pub model_name: String,
}

/// Triggered when a record is deleted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("record_delete")]
pub struct RecordDelete {
    /// The record.
    pub id: Uuid,
    /// Its model, e.g. `Review`.
    pub model_name: String,
}

/// A reference to a user of the ID service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserRef {
    /// The user.
    pub id: Uuid,
}

/// What happened to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserAction {
    /// The user's data changed.
    Update,
    /// The user was deleted.
    Delete,
}

/// Triggered when the user is changed in the ID service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("id_user_changed", aliases = ["sso_user_changed"])]
pub struct IdUserChanged {
    /// The user.
    pub data: UserRef,
    /// `update` or `delete`.
    pub action: UserAction,
}

/// Triggered when a grant is published.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("grant_published")]
pub struct GrantPublished {
    /// The grant.
    pub id: Uuid,
}

/// Triggered when a user applies for a grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("user_applied")]
pub struct UserApplied {
    /// The application.
    pub id: Uuid,
}

/// Triggered when the winners of a grant are announced.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("winners_announcement")]
pub struct WinnersAnnouncement {
    /// The grant.
    pub id: Uuid,
}

/// Triggered when a user finishes a survey.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("user_survey_finished")]
pub struct UserSurveyFinished {
    /// The survey answer.
    pub id: Uuid,
}

/// Job: send a text message. Its one argument is the id of the
/// `ShortMessage` row, as Django sends it:
/// `send_task("send_short_message", args=(instance.id,), queue="sms_send_queue")`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, Event)]
#[event("send_short_message", celery, queue = "sms_send_queue")]
pub struct SendShortMessage(pub i64);

/// Job: send an e-mail. Its one argument is the id of the `EmailMessage` row.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, Event)]
#[event("send_email_task", celery)]
pub struct SendEmailTask(pub i64);

/// Job: send an in-app notification. Its one argument is the id of the
/// `Notification` row.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, Event)]
#[event("send_notification", celery)]
pub struct SendNotification(pub i64);

/// Job for the Django side: mark a `ShortMessage` row as sent. The Python
/// workers run it; the Rust SMS worker sends it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, Event)]
#[event("mark_message_sent", celery, queue = "django_tasks")]
pub struct MarkMessageSent(pub i64);

/// Reminds the author of a review that is still waiting for moderation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("review_reminder")]
pub struct ReviewReminder {
    /// The review.
    pub id: Uuid,
}

/// Fired by the recurring schedule: time to publish moderation statistics.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event("moderation_stats_due")]
pub struct ModerationStatsDue {
    /// When the tick fired (Unix ms).
    pub tick_ms: u64,
}
