//! Column lists shared by several statements, as macros so statements stay `&'static str`
//! (sqlx refuses SQL built at run time unless audited).

macro_rules! delivery_columns {
    () => {
        "id, organization_id, message_id, patient_id, channel, recipient, status, attempts, max_attempts, \
         not_before, connector, provider_ref, reason, created_at, updated_at"
    };
}

macro_rules! message_columns {
    () => {
        "id, organization_id, thread_id, patient_id, direction, content, urgent, part2, metadata, created_at"
    };
}

macro_rules! patient_columns {
    () => {
        "id, organization_id, external_id, family_name, given_name, birth_date, sex, language, time_zone, \
         address, created_at, updated_at"
    };
}

macro_rules! organization_columns {
    () => {
        "id, slug, name, time_zone, created_at"
    };
}

macro_rules! appointment_columns {
    () => {
        "id, organization_id, patient_id, filler_id, placer_id, start_at, start_offset_minutes, duration_minutes, \
         status, appointment_type, reason, location, location_code, provider_id, provider_name, source, created_at, updated_at, \
         confirmation"
    };
}
