"""Template helpers of the live page."""

from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """``{{ fragments|get_item:"banner" }}``: a fragment by id ('' when the frame has none)."""
    return mapping.get(key, "")
