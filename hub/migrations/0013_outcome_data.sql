-- Outcome data (raccordo_domain::practice): what vendors' results set
-- beyond status and references (an amount due, a certificate's number),
-- checked and typed by the service's `outcome_data` declaration. On the
-- practice, the fields merged so far (a JSON object, NULL when none); on an
-- event, the fields the result behind it added or changed, whose digest its
-- audit record carries (absent from records of events without it, so older
-- records verify as written).
ALTER TABLE practices ADD COLUMN outcome_data TEXT;
ALTER TABLE events ADD COLUMN outcome_data TEXT;
