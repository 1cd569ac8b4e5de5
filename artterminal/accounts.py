"""Sign-up beside Django's own login, logout and password views under /accounts/, with
failed logins throttled per username (here and on the admin's login page) and sign-ups
per client address."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import login
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.forms import PasswordInput
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import include, path
from django.views.decorators.http import require_http_methods

from artterminal.ratelimit import minutes_text, rate_limit_hit, rate_limit_reached


class _LoginThrottle:
    """Past LOGIN_FAILURES_PER_WINDOW wrong passwords for one username within
    LOGIN_FAILURE_WINDOW_SECONDS, that username is refused without a password check
    until the window ends: a password cannot be guessed at request speed. Counted per
    username, not per address: a guesser can spread one username's guesses over many
    addresses."""

    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "").strip().lower()
        limit, window = settings.LOGIN_FAILURES_PER_WINDOW, settings.LOGIN_FAILURE_WINDOW_SECONDS
        key = f"login-failures:{username}"
        wait = rate_limit_reached(key=key, limit=limit, window_seconds=window)
        if wait is not None:
            raise ValidationError(
                "Too many failed attempts to log in as this user. "
                f"Try again in {minutes_text(wait)}.",
                code="throttled",
            )
        try:
            return super().clean()  # type: ignore[misc]
        except ValidationError:
            rate_limit_hit(key=key, limit=limit, window_seconds=window)
            raise


class ThrottledAuthenticationForm(_LoginThrottle, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(_LoginThrottle, AdminAuthenticationForm):
    pass


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if any(error.code == "throttled" for error in form.non_field_errors().as_data()):
            response.status_code = 429
        return response


def _signup_address(request: HttpRequest) -> str:
    """Who is signing up, for counting: the client address Daphne puts in REMOTE_ADDR
    (behind nginx, with --proxy-headers, the address nginx saw; see docs/deploy.md).
    X-Forwarded-For is never read here: any client can write it. An IPv6 client usually
    holds a whole /64, so that is counted as one address."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _signup_wait(address: str, *, accounts: bool, count: bool) -> int | None:
    """Seconds until `address` may sign up again, or None: by the accounts it made this
    hour, or (not `accounts`) the forms it sent; with `count`, this request counts
    against it. A limit of 0 sets none."""
    if accounts:
        limit, key = settings.SIGNUPS_PER_ADDRESS_PER_HOUR, f"signups:{address}"
    else:
        limit, key = settings.SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR, f"signup-attempts:{address}"
    if not limit:
        return None
    if count:
        return rate_limit_hit(key=key, limit=limit, window_seconds=3600)
    return rate_limit_reached(key=key, limit=limit, window_seconds=3600)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Every new account brings its own picture and voice allowances, so one client
    address may submit the form SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR times and create
    SIGNUPS_PER_ADDRESS_PER_HOUR accounts in an hour."""
    form: UserCreationForm = UserCreationForm(request.POST or None)
    if request.method != "POST":
        return render(request, "registration/signup.html", {"form": form})
    address = _signup_address(request)
    # Attempts count before the form is read: past the limit, nobody learns from it
    # which usernames are taken.
    wait = _signup_wait(address, accounts=False, count=True)
    if wait is None:
        # Refused at once when the accounts are used up, not after fixing the form.
        wait = _signup_wait(address, accounts=True, count=False)
    if wait is None and form.is_valid():
        # Counted before saving, atomically: simultaneous requests cannot all pass.
        wait = _signup_wait(address, accounts=True, count=True)
        if wait is None:
            user = form.save()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("gallery:index")
    if wait is not None:
        # An unbound form keeps what was typed except the passwords and shows no field
        # errors (which would say whether the username is taken).
        kept = {
            name: request.POST.get(name, "")
            for name, field in form.fields.items()
            if not isinstance(field.widget, PasswordInput)
        }
        refused: UserCreationForm = UserCreationForm(initial=kept)
        refusal = (
            f"Too many sign-ups from your network this hour. Try again in {minutes_text(wait)}."
        )
        return render(
            request,
            "registration/signup.html",
            {"form": refused, "refusal": refusal},
            status=429,
        )
    return render(request, "registration/signup.html", {"form": form}, status=400)


urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("signup/", signup, name="signup"),
    path("", include("django.contrib.auth.urls")),
]
