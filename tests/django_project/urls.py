"""URLs of the test project."""

from django.urls import path

from redis_safepool.django import views as safepool_views

from . import views

urlpatterns = [
    path("cache/<str:alias>/<str:key>/", views.cache_key),
    path("hit/<str:alias>/", views.hit),
    path("boom/", views.boom),
    path("safepool/stats/", safepool_views.stats),
]
