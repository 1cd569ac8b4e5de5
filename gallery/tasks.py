"""Background jobs of the gallery (run by the django-tasks database worker)."""

from django_tasks import task


@task()
def generate_image(*, image_id: int) -> None:
    raise NotImplementedError
