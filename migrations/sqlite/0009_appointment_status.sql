-- Appointment status becomes a fixed vocabulary (src/domain/appointment.rs): booked, arrived,
-- completed, cancelled, noshow, discontinued. Earlier rows hold what HL7 SCH-25 or the API
-- gave, lower-cased; they are rewritten the way AppointmentStatus::from_stored reads them (HL7
-- table 0278 codes and older spellings; anything else was, and stays, a booked appointment).
UPDATE appointments SET status = CASE LOWER(TRIM(status))
    WHEN 'booked' THEN 'booked'
    WHEN 'pending' THEN 'booked'
    WHEN 'waitlist' THEN 'booked'
    WHEN 'overbook' THEN 'booked'
    WHEN 'confirmed' THEN 'booked'
    WHEN 'scheduled' THEN 'booked'
    WHEN 'started' THEN 'arrived'
    WHEN 'arrived' THEN 'arrived'
    WHEN 'complete' THEN 'completed'
    WHEN 'completed' THEN 'completed'
    WHEN 'fulfilled' THEN 'completed'
    WHEN 'cancelled' THEN 'cancelled'
    WHEN 'canceled' THEN 'cancelled'
    WHEN 'deleted' THEN 'cancelled'
    WHEN 'blocked' THEN 'cancelled'
    WHEN 'noshow' THEN 'noshow'
    WHEN 'no-show' THEN 'noshow'
    WHEN 'no_show' THEN 'noshow'
    WHEN 'dc' THEN 'discontinued'
    WHEN 'discontinued' THEN 'discontinued'
    ELSE 'booked'
END;
