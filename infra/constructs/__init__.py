"""One construct per concern; each takes typed keyword-only props and can be used in another team's stack."""
