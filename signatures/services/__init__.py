"""Writes and decisions for signatures, one module per concern: inputs (uploads, vectors, files),
compare, enrolment (signers, references, their own models), verify, encoders (activation,
training runs)."""
