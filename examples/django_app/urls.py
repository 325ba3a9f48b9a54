"""URLs of the Django demo."""

from __future__ import annotations

from django.urls import path, re_path

from django_app import views

urlpatterns = [
    path("items/<int:item_id>/", views.item),
    path("merchants/<str:merchant_id>/orders/<int:order_id>/", views.order),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", views.archive),
    path("fail/", views.fail),
]
