package com.example.shipping;
class ApplicationTest {}
