"""``falbudget proxy``: a budgeted stand-in for fal's server proxy (needs the ``proxy`` extra)."""
