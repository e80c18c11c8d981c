"""The comic domain shared by pss, stage3, demo_data and the comic-book dataset: book folders (pages, OCR and
panel sidecars) and CoSMo page annotations."""
