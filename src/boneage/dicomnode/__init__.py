"""The DICOM node (`boneage dicom-node`): films in from a PACS or a modality over DICOM, the
bone age back into the same study as a Structured Report and a Secondary Capture image, through
a durable spool. See docs/dicom.md."""
