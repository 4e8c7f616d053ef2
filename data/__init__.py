"""NanoPhi's data pipeline: `from data.prepare import prepare_dataset`, `from data.index import load_doc_index`."""
