"""The AWS CDK app: one stack (``stack.py``) composed of one construct per concern (``constructs/``)."""
