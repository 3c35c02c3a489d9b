"""The run record: a complete, checkable account of how a run was made (record.json), its
verification, and its exports for auditors (model card, SPDX 3.0, CycloneDX ML-BOM)."""
