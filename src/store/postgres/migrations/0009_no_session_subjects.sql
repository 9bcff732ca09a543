-- Session subjects (a user's first message) are no longer stored: prompt text in the
-- clear outlived its calls' expiry. The API reads them from the content on demand.
UPDATE sessions SET subject = NULL WHERE subject IS NOT NULL;
