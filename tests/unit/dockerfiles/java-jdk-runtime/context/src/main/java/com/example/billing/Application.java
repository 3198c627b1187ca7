package com.example.billing;
class Application {}
