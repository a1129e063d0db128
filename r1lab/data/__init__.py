"""Data: tokenizer and chat templates, streaming tokenisation, packing, FIM, corpora and task families."""
