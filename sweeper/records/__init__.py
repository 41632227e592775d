"""What a study recorded, read back as plain objects: its trials' outcomes and best
(results) and the confirmation over seeds (confirmation). The sweep and the confirmation
write these records; every view and command reads them; they import only settings."""
