package com.example.shipping;
class Application {}
