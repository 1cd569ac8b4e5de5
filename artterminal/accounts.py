"""Sign-up beside Django's own login, logout and password views under /accounts/, with
failed logins throttled per username (here and on the admin's login page)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import login
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import include, path
from django.views.decorators.http import require_http_methods

from artterminal.ratelimit import minutes_text, rate_limit_hit, rate_limit_reached


class _LoginThrottle:
    """Past LOGIN_FAILURES_PER_WINDOW wrong passwords for one username within
    LOGIN_FAILURE_WINDOW_SECONDS, that username is refused without a password check
    until the window ends: a password cannot be guessed at request speed. Counted per
    username, not per address: behind the proxy every request comes from it."""

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


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form: UserCreationForm = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("gallery:index")
    return render(
        request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200
    )


urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("signup/", signup, name="signup"),
    path("", include("django.contrib.auth.urls")),
]
