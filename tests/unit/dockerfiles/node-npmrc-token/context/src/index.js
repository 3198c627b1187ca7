console.log("notifications");
