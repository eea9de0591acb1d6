"""``keymodels serve``: a local web page and JSON API to look at trained runs' attention.

``service`` holds the models and their request queues; ``app`` is the FastAPI layer over it.
"""
