"""URLs: a cache-backed counter, stats JSON and Prometheus metrics."""

from django.urls import path

from redis_safepool.django import views as safepool_views

from . import views

urlpatterns = [
    path("", views.index),
    path("safepool/stats/", safepool_views.stats),
    path("metrics", safepool_views.metrics),
]
