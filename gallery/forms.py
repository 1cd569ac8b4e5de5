"""Forms of the gallery pages: they parse and validate; services do the work."""

from __future__ import annotations

from typing import Any

from django import forms

from gallery import selectors
from gallery.models import Terminal
from gallery.services import MAX_PROMPT_LENGTH

STYLE_CHOICES = [
    ("", "Any style"),
    ("photographic", "Photographic"),
    ("watercolour", "Watercolour"),
    ("oil painting", "Oil painting"),
    ("ink sketch", "Ink sketch"),
    ("pixel art", "Pixel art"),
    ("neon", "Neon"),
    ("minimal", "Minimal"),
]


class ImageCreateForm(forms.Form):
    prompt = forms.CharField(
        label="Describe the picture",
        max_length=MAX_PROMPT_LENGTH,
        error_messages={"required": "Describe the picture you want."},
        widget=forms.Textarea(
            attrs={
                "rows": 4,
                "placeholder": "a red fox under a blue moon, snow falling",
                "autofocus": True,
            }
        ),
        help_text="Colours, things and moods all shape the picture.",
    )
    style = forms.ChoiceField(label="Style", choices=STYLE_CHOICES, required=False)
    terminal = forms.ModelChoiceField(
        label="Show it on a terminal",
        queryset=Terminal.objects.none(),
        required=False,
        empty_label="No terminal — just my gallery",
        help_text="Only terminals you may control are listed.",
    )

    def __init__(self, *args: Any, user: selectors.AnyUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        terminal_field = self.fields["terminal"]
        assert isinstance(terminal_field, forms.ModelChoiceField)
        terminal_field.queryset = selectors.terminals_controlled_by(user=user).order_by("name")

    def clean_prompt(self) -> str:
        prompt = " ".join(str(self.cleaned_data["prompt"]).split())
        if not prompt:
            raise forms.ValidationError("Describe the picture you want.")
        return prompt
