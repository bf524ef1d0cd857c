"""Which unlabelled images an expert should label first: strategies on self-supervised features
(``strategies.py``), ``lesionssl select`` (``select.py``) with its page (``page.py``), and
``split --labels`` (``labels.py``), which reads the filled-in CSV back into a manifest."""
